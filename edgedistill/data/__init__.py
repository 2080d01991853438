"""Datasets as numpy arrays (or images read from files on demand, data.images.ImageArray), split
deterministically by seed. Only numpy, scikit-learn and Pillow here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgedistill.data.sampling import stratified_indices as stratified_indices  # callers import it from here


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32, (N, C, H, W); or an ImageArray, which reads its files batch by batch
    y: np.ndarray  # int64, (N,)

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    train: Split
    val: Split
    test: Split
    class_names: list[str]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def take(x, indices: np.ndarray, labels: np.ndarray) -> Split:
    """The samples at `indices` as a Split: copied out of an array, or a lazy subset of image files."""
    if hasattr(x, "subset"):
        return Split(x.subset(indices), labels[indices].astype(np.int64))
    return Split(np.ascontiguousarray(x[indices], dtype=np.float32), labels[indices].astype(np.int64))


def stratified_split(x: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int,
                     class_names: list[str], stratify: bool = True) -> Dataset:
    """Train/val/test split that keeps each class's share, the same for the same seed. With `stratify` off
    (a handful of images with classes seen once) a seeded shuffle that only keeps each part non-empty."""
    from sklearn.model_selection import train_test_split

    from edgedistill.errors import UserError

    idx = np.arange(len(y))
    if not stratify:
        if len(y) < 3:
            raise UserError(f"data: {len(y)} samples; a train/val/test split needs at least 3")
        rest, test = train_test_split(idx, test_size=max(1, round(test_fraction * len(y))), random_state=seed)
        train, val = train_test_split(rest, test_size=max(1, round(val_fraction * len(y))), random_state=seed)
        return Dataset(take(x, np.sort(train), y), take(x, np.sort(val), y), take(x, np.sort(test), y), class_names)
    counts = np.bincount(y, minlength=len(class_names))
    fewest = int(counts.argmin())
    # Each class must reach train, validation and test, and each held-out part must hold every class once.
    needed = max(3, int(np.ceil(len(class_names) / min(val_fraction, test_fraction) / len(y))))
    if counts[fewest] < needed or min(val_fraction, test_fraction) * len(y) < len(class_names):
        raise UserError(f"data: class {class_names[fewest]!r} has {counts[fewest]} samples of {len(y)} in all; a "
                        f"stratified train/val/test split of {len(class_names)} classes needs at least {needed} of "
                        f"each, and val_fraction and test_fraction x {len(y)} samples of at least {len(class_names)}")
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), stratify=y[rest],
                                  random_state=seed)
    return Dataset(take(x, np.sort(train), y), take(x, np.sort(val), y), take(x, np.sort(test), y), class_names)


def load_dataset(spec, seed: int) -> Dataset:
    """The dataset a pipeline's `data` section names, split by `seed`. A data kind with an official test split
    (idx with test files, an image folder with train/ and test/) keeps it, and its validation split when it
    has one; otherwise validation is drawn, stratified, from the training part."""
    from edgedistill.data import digits, idx, images, npz

    loader = {"digits": digits.load, "npz": npz.load, "idx": idx.load, "imagefolder": images.load}[spec.kind]
    loaded = loader(spec)
    x, y, class_names = loaded[:3]
    given_test = loaded[3] if len(loaded) > 3 else None
    given_val = loaded[4] if len(loaded) > 4 else None
    dataset = _split(spec, seed, x, y, class_names, given_test, given_val)
    if spec.kind == "imagefolder" and spec.preprocess.mean == "auto":
        dataset = _normalized_by_training_split(dataset)
    return dataset


FAINT_SPREAD = 0.05  # std of 0..1 pixel values: under 13 grey levels of 255 across the whole training split


def spread_note(spec, dataset: Dataset) -> str | None:
    """A note when an image folder's training pixels barely vary (faint or dark images: electroluminescence,
    X-ray, thermal), where a network fed 0..1 values sees almost no contrast; None otherwise."""
    if spec.kind != "imagefolder" or not hasattr(dataset.train.x, "pixel_statistics"):
        return None
    mean, std = dataset.train.x.pixel_statistics()
    if float(std.max()) >= FAINT_SPREAD:
        return None
    fix = ("data.preprocess mean/std: auto already rescales them to unit spread" if spec.preprocess.mean == "auto"
           else "set data.preprocess: {mean: auto, std: auto} to rescale them to unit spread")
    return (f"the training images' pixels spread little (std {float(std.max()):.3f} of the 0..1 range, mean "
            f"{float(mean.mean()):.3f}): faint or dark images, where a network learns little from raw values; {fix}")


def _normalized_by_training_split(dataset: Dataset) -> Dataset:
    """`data.preprocess: {mean: auto, std: auto}`: per-channel statistics of the training split's pixels, applied
    to every split (the validation and test images never shape them)."""
    mean, std = dataset.train.x.pixel_statistics()
    preprocess = dataset.train.x.preprocess.normalized(mean, std)
    return Dataset(*(Split(split.x.with_preprocess(preprocess), split.y)
                     for split in (dataset.train, dataset.val, dataset.test)), dataset.class_names)


def _split(spec, seed, x, y, class_names, given_test, given_val) -> Dataset:
    stratify = getattr(spec, "stratify", True)
    if given_test is None:
        return stratified_split(x, y, spec.val_fraction, spec.test_fraction, seed, class_names, stratify)
    test = Split(given_test[0], given_test[1])
    everything = np.arange(len(y))
    if given_val is not None:
        return Dataset(take(x, everything, y), Split(given_val[0], given_val[1]), test, class_names)
    from sklearn.model_selection import train_test_split

    # The official test split as given; validation drawn (stratified unless told not to) from the training part.
    train, val = train_test_split(everything, test_size=spec.val_fraction, stratify=y if stratify else None,
                                  random_state=seed)
    return Dataset(take(x, np.sort(train), y), take(x, np.sort(val), y), test, class_names)


def preprocessing(spec, data: Dataset | None = None) -> dict:
    """How a raw input becomes the model's input, for the artifacts' metadata and the report: what an app
    must do to feed the model as it was trained (with `mean: auto`, the statistics measured on `data`)."""
    if spec.kind == "imagefolder":
        from edgedistill.data.images import Preprocess

        if data is not None and hasattr(data.train.x, "preprocess"):
            described = data.train.x.preprocess.describe()
            if spec.preprocess.mean == "auto":
                described["normalization"] = "per-channel mean and std measured on the training split"
            return described
        return Preprocess.from_spec(spec.preprocess).describe()
    if spec.kind == "digits":
        return {"source": "scikit-learn load_digits, 8x8", "layout": "NCHW", "channels": "gray",
                "pixel_range": "0..16", "input = pixel * scale + offset": {"scale": [1 / 16], "offset": [0.0]}}
    if spec.kind == "idx":
        return {"source": "idx (MNIST format) files", "layout": "NCHW", "channels": "gray", "pixel_range": "0..255",
                "input = pixel * scale + offset": {"scale": [1 / 255], "offset": [0.0]}}
    return {"source": f"{spec.kind} arrays as stored (x as float32)", "layout": "NCHW"}
