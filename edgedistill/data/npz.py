"""A user's .npz file with arrays `x` (N, H, W) or (N, C, H, W) and integer labels `y` (N,)."""

from __future__ import annotations

import zipfile

import numpy as np

from edgedistill.errors import UserError


def load(spec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    path = spec.path
    try:
        # allow_pickle=False: an .npz must never run code when it is read.
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in ("x", "y") if k not in arrays.files]
            if missing:
                raise UserError(f"{path}: data.path: missing array {missing[0]!r} (found: {', '.join(arrays.files) or 'none'}; "
                                "expected x and y)")
            x, y = arrays["x"], arrays["y"]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path}: data.path: not a readable .npz without pickles ({exc})") from None
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise UserError(f"{path}: data.path: x has shape {x.shape}; expected (N, H, W) or (N, C, H, W)")
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(f"{path}: data.path: y has shape {y.shape}; expected ({len(x)},) to match x")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise UserError(f"{path}: data.path: y must hold class indices 0..K-1, got dtype {y.dtype} min {y.min()}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise UserError(f"{path}: data.path: x must be finite numbers, got dtype {x.dtype}")
    num_classes = int(y.max()) + 1
    names = spec.class_names or [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise UserError(f"{path}: data.class_names: {len(names)} names for {num_classes} classes in y")
    return x.astype(np.float32), y.astype(np.int64), list(names)
