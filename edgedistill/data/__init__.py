"""Datasets as numpy arrays, split deterministically by seed. Only numpy and scikit-learn here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32, (N, C, H, W)
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


def stratified_split(x: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int,
                     class_names: list[str]) -> Dataset:
    """Train/val/test split that keeps each class's share, the same for the same seed."""
    from sklearn.model_selection import train_test_split

    from edgedistill.errors import UserError

    counts = np.bincount(y, minlength=len(class_names))
    fewest = int(counts.argmin())
    # Each class must reach train, validation and test, and each held-out part must hold every class once.
    needed = max(3, int(np.ceil(len(class_names) / min(val_fraction, test_fraction) / len(y))))
    if counts[fewest] < needed or min(val_fraction, test_fraction) * len(y) < len(class_names):
        raise UserError(f"data: class {class_names[fewest]!r} has {counts[fewest]} samples of {len(y)} in all; a "
                        f"stratified train/val/test split of {len(class_names)} classes needs at least {needed} of "
                        f"each, and val_fraction and test_fraction x {len(y)} samples of at least {len(class_names)}")
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), stratify=y[rest],
                                  random_state=seed)
    part = lambda i: Split(np.ascontiguousarray(x[i], dtype=np.float32), y[i].astype(np.int64))  # noqa: E731
    return Dataset(part(np.sort(train)), part(np.sort(val)), part(np.sort(test)), class_names)


def load_dataset(spec, seed: int) -> Dataset:
    """The dataset a pipeline's `data` section names, split by `seed`; a data kind with an official test split
    (idx with test files) keeps it, and only the validation split is drawn from its training part."""
    from edgedistill.data import digits, idx, npz

    loader = {"digits": digits.load, "npz": npz.load, "idx": idx.load}[spec.kind]
    loaded = loader(spec)
    x, y, class_names = loaded[:3]
    given_test = loaded[3] if len(loaded) > 3 else None
    if given_test is None:
        return stratified_split(x, y, spec.val_fraction, spec.test_fraction, seed, class_names)
    from sklearn.model_selection import train_test_split

    # The official test split as given; validation drawn, stratified, from the training files.
    train, val = train_test_split(np.arange(len(y)), test_size=spec.val_fraction, stratify=y, random_state=seed)
    part = lambda i: Split(np.ascontiguousarray(x[i]), y[i])  # noqa: E731
    return Dataset(part(np.sort(train)), part(np.sort(val)), Split(np.ascontiguousarray(given_test[0]),
                                                                     given_test[1]), class_names)


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` indices into `labels`, a seeded draw with every class in proportion: a calibration set that a
    class-sorted file cannot turn into one class. All of them when `n` reaches the split's size."""
    if n >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    try:
        chosen, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    except ValueError:  # fewer draws than classes: a plain seeded draw
        chosen = np.random.default_rng(seed).choice(len(labels), n, replace=False)
    return np.sort(chosen)
