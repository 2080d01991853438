"""Seeded, class-proportional draws. Its own module so that the data kinds (idx, images) can use it without
importing the package that loads them."""

from __future__ import annotations

import numpy as np


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
