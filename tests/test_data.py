"""Datasets: the bundled digits split, and a user's .npz file with its failure modes."""

from __future__ import annotations

import numpy as np
import pytest

from edgedistill.config.pipeline import DigitsData, NpzData
from edgedistill.data import load_dataset
from edgedistill.errors import UserError


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
