"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images in 10 classes, no download."""

from __future__ import annotations

import numpy as np


def load(spec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; scale to 0..1 so the same models suit other image data.
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return x, digits.target.astype(np.int64), [str(c) for c in digits.target_names]
