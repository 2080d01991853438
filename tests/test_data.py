"""Datasets: the bundled digits split, and a user's .npz file with its failure modes."""

from __future__ import annotations

import numpy as np
import pytest

from edgedistill.config.pipeline import DigitsData, NpzData
from edgedistill.data import load_dataset
from edgedistill.errors import UserError
from tests.optional import needs


def test_digits_split_is_stratified_disjoint_and_seeded():
    data = load_dataset(DigitsData(kind="digits"), seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (1167, 270, 360)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert 0 <= data.train.x.min() and data.train.x.max() <= 1 and data.train.x.dtype == np.float32
    # Each class keeps its share in the test split (stratified): 10 classes of ~36.
    counts = np.bincount(data.test.y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    again = load_dataset(DigitsData(kind="digits"), seed=0)
    other = load_dataset(DigitsData(kind="digits"), seed=1)
    assert np.array_equal(data.test.x, again.test.x)
    assert not np.array_equal(data.test.x, other.test.x)
    rows = {r.tobytes() for r in data.train.x} & {r.tobytes() for r in data.test.x}
    # Digits has a few duplicate images; the splits share rows only where the data itself repeats.
    assert len(rows) <= 5


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_npz_loads_three_dim_images(tmp_path):
    rng = np.random.default_rng(0)
    path = _npz(tmp_path, x=rng.random((100, 6, 6)), y=np.repeat(np.arange(4), 25))
    data = load_dataset(NpzData(kind="npz", path=path, class_names=["a", "b", "c", "d"]), seed=0)
    assert data.input_shape == (1, 6, 6) and data.class_names == ["a", "b", "c", "d"]
    assert len(data.train) + len(data.val) + len(data.test) == 100


@pytest.mark.parametrize("arrays,match", [
    (dict(x=np.zeros((10, 4, 4)), y=np.zeros(9, dtype=int)), "y has shape"),
    (dict(x=np.zeros((10, 4)), y=np.zeros(10, dtype=int)), "x has shape"),
    (dict(x=np.zeros((10, 4, 4))), "missing array 'y'"),
    (dict(x=np.zeros((10, 4, 4)), y=np.full(10, 0.5)), "class indices"),
    (dict(x=np.full((10, 4, 4), np.nan), y=np.zeros(10, dtype=int)), "NaN or inf"),
])
def test_npz_bad_arrays(tmp_path, arrays, match):
    path = _npz(tmp_path, **arrays)
    with pytest.raises(UserError, match=match):
        load_dataset(NpzData(kind="npz", path=path), seed=0)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = _npz(tmp_path, x=np.array([{"a": 1}] * 10, dtype=object), y=np.zeros(10, dtype=int))
    with pytest.raises(UserError, match="without pickles"):
        load_dataset(NpzData(kind="npz", path=path), seed=0)


def test_not_an_npz(tmp_path):
    path = tmp_path / "data.npz"
    path.write_text("hello")
    with pytest.raises(UserError, match="not a readable .npz"):
        load_dataset(NpzData(kind="npz", path=path), seed=0)


def _write_idx(path, array: np.ndarray, gzipped: bool, header_dims=None) -> None:
    import gzip

    dims = header_dims or array.shape
    raw = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in dims) + \
        array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gzipped else raw)


def _idx_files(tmp_path, gzipped=True, n=200, n_test=50):
    rng = np.random.default_rng(0)
    files = {}
    for name, count in (("train", n), ("test", n_test)):
        suffix = ".gz" if gzipped else ""
        _write_idx(tmp_path / f"{name}-images{suffix}", rng.integers(0, 256, (count, 6, 5)), gzipped)
        _write_idx(tmp_path / f"{name}-labels{suffix}", np.arange(count) % 4, gzipped)
        files[name] = (tmp_path / f"{name}-images{suffix}", tmp_path / f"{name}-labels{suffix}")
    return files


@pytest.mark.parametrize("gzipped", [True, False])
def test_idx_reads_images_labels_and_the_given_test_split(tmp_path, gzipped):
    from edgedistill.config.pipeline import IdxData

    files = _idx_files(tmp_path, gzipped)
    spec = IdxData(kind="idx", images=files["train"][0], labels=files["train"][1], test_images=files["test"][0],
                   test_labels=files["test"][1], val_fraction=0.2)
    data = load_dataset(spec, seed=0)
    assert data.input_shape == (1, 6, 5) and data.num_classes == 4 and data.train.x.dtype == np.float32
    assert len(data.test) == 50 and len(data.val) == 40 and len(data.train) == 160  # the test split as given
    assert 0 <= data.train.x.min() and data.train.x.max() <= 1.0
    assert np.bincount(data.val.y).tolist() == [10, 10, 10, 10]  # validation stratified from the training files
    without_test = load_dataset(IdxData(kind="idx", images=files["train"][0], labels=files["train"][1]), seed=0)
    assert len(without_test.train) + len(without_test.val) + len(without_test.test) == 200


def test_idx_files_that_lie_are_one_line(tmp_path):
    from edgedistill.config.pipeline import IdxData

    files = _idx_files(tmp_path, gzipped=False)
    images, labels = files["train"]
    _write_idx(tmp_path / "short", np.zeros((10, 6, 5)), False, header_dims=(20, 6, 5))
    with pytest.raises(UserError, match=r"short: data.images: header says \[20, 6, 5\] \(600 bytes\), the file "
                                        r"holds 300"):
        load_dataset(IdxData(kind="idx", images=tmp_path / "short", labels=labels), seed=0)
    with pytest.raises(UserError, match=r"data.images: not an idx file of unsigned bytes with 3 dimensions "
                                        r"\(magic 00000801; expected 00000803\)"):
        load_dataset(IdxData(kind="idx", images=labels, labels=labels), seed=0)
    _write_idx(tmp_path / "few-labels", np.arange(7) % 4, False)
    with pytest.raises(UserError, match="7 labels for 200 images"):
        load_dataset(IdxData(kind="idx", images=images, labels=tmp_path / "few-labels"), seed=0)


def test_idx_config_asks_for_both_test_files_and_names_the_debian_package(tmp_path):
    from edgedistill.config.pipeline import load_pipeline
    from tests.conftest import tiny_pipeline_dict, write_pipeline

    files = _idx_files(tmp_path)
    spec = tiny_pipeline_dict(data={"kind": "idx", "images": str(files["train"][0]),
                                    "labels": str(files["train"][1]), "test_images": str(files["test"][0])})
    with pytest.raises(UserError, match="test_images and test_labels go together"):
        load_pipeline(write_pipeline(tmp_path / "p.yaml", spec))
    spec["data"] = {"kind": "idx", "images": "/usr/share/datasets/emnist/train-images.gz", "labels": "x"}
    with pytest.raises(UserError, match=r"file not found: '/usr/share/datasets/emnist/train-images.gz' \(apt-get "
                                        r"install dataset-emnist\)"):
        load_pipeline(write_pipeline(tmp_path / "p.yaml", spec))


FASHION = "/usr/share/datasets/fashion-mnist"


@needs("fashion-mnist")
def test_the_real_fashion_mnist_files():
    """Debian's dataset-fashion-mnist: the official 60,000 training and 10,000 test images, 28x28, 10 classes."""
    from edgedistill.config.pipeline import IdxData

    spec = IdxData(kind="idx", images=f"{FASHION}/train-images-idx3-ubyte.gz",
                   labels=f"{FASHION}/train-labels-idx1-ubyte.gz", test_images=f"{FASHION}/t10k-images-idx3-ubyte.gz",
                   test_labels=f"{FASHION}/t10k-labels-idx1-ubyte.gz")
    data = load_dataset(spec, seed=0)
    assert len(data.train) + len(data.val) == 60_000 and len(data.test) == 10_000
    assert data.input_shape == (1, 28, 28) and np.bincount(data.test.y).tolist() == [1000] * 10


@pytest.mark.parametrize("shape,layout,expect", [
    ((20, 32, 32, 3), "auto", (3, 32, 32)),  # NHWC RGB: read as 3 channels, not 32
    ((20, 3, 32, 32), "auto", (3, 32, 32)),
    ((20, 1, 8, 8), "auto", (1, 8, 8)),
    ((20, 8, 16, 16), "nchw", (8, 16, 16)),  # 8 bands: the shape cannot say, the pipeline does
    ((20, 16, 16, 8), "nhwc", (8, 16, 16)),
])
def test_npz_layouts(tmp_path, shape, layout, expect):
    rng = np.random.default_rng(0)
    x = rng.random(shape, dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(shape[0]) % 2)
    data = load_dataset(NpzData(kind="npz", path=tmp_path / "d.npz", layout=layout, val_fraction=0.2,
                                test_fraction=0.2), seed=0)
    assert data.input_shape == expect
    whole = np.concatenate([data.train.x, data.val.x, data.test.x])
    # The same pixels, moved: every sample's top-left pixel, all its channels, is where (N, C, H, W) puts it.
    given = x[:, 0, 0, :] if x.shape[1:] != expect else x[:, :, 0, 0]
    assert np.array_equal(np.sort(whole[:, :, 0, 0], axis=0), np.sort(given, axis=0))


@pytest.mark.parametrize("shape", [(20, 3, 3, 3), (20, 8, 16, 16)])
def test_npz_shapes_that_do_not_say_their_layout_ask_for_it(tmp_path, shape):
    np.savez(tmp_path / "d.npz", x=np.zeros(shape, np.float32), y=np.arange(shape[0]) % 2)
    with pytest.raises(UserError, match=r"data.layout: x has shape .* could be \(N, C, H, W\) or \(N, H, W, C\); set "
                                        r"data.layout: nchw or nhwc"):
        load_dataset(NpzData(kind="npz", path=tmp_path / "d.npz"), seed=0)


def test_an_idx_file_longer_than_its_header_says_is_refused(tmp_path):
    from edgedistill.config.pipeline import IdxData

    _write_idx(tmp_path / "long", np.zeros((20, 6, 5)), False, header_dims=(10, 6, 5))
    _write_idx(tmp_path / "labels", np.arange(10) % 2, False)
    with pytest.raises(UserError, match=r"header says \[10, 6, 5\] \(300 bytes\), the file holds 301 or more"):
        load_dataset(IdxData(kind="idx", images=tmp_path / "long", labels=tmp_path / "labels"), seed=0)
