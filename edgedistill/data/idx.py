"""MNIST-format (idx) files, gzipped or not: images (N, H, W) and labels (N,), as MNIST, Fashion-MNIST and
EMNIST ship them (the format: http://yann.lecun.com/exdb/mnist/, "FILE FORMATS FOR THE MNIST DATABASE").

Read defensively: the header's magic, type and dimensions are checked against the bytes that follow and
bounded before anything is allocated; the payload is one unsigned-byte array.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from edgedistill.data.npz import MAX_CLASSES, MAX_SIDE
from edgedistill.errors import UserError

UNSIGNED_BYTE = 0x08
MAX_IMAGES = 10_000_000
MAX_BYTES = 1 << 30  # pixels in one file (EMNIST's largest split is 0.55 GB)


def read_idx(path: Path, ndim: int, field: str) -> np.ndarray:
    """The unsigned-byte array of `ndim` dimensions in idx file `path` (gzip if it starts like one)."""
    try:
        with open(path, "rb") as plain:
            gzipped = plain.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            header = f.read(4 + 4 * ndim)
            if len(header) < 4 + 4 * ndim or header[:2] != b"\x00\x00" or header[2] != UNSIGNED_BYTE \
                    or header[3] != ndim:
                raise UserError(f"{path}: data.{field}: not an idx file of unsigned bytes with {ndim} dimensions "
                                f"(magic {header[:4].hex() or 'missing'}; expected 0000080{ndim})")
            dims = [int.from_bytes(header[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
            if dims[0] == 0 or dims[0] > MAX_IMAGES or any(not 0 < d <= MAX_SIDE for d in dims[1:]):
                raise UserError(f"{path}: data.{field}: dimensions {dims}; expected 1..{MAX_IMAGES:,} items of at "
                                f"most {MAX_SIDE} pixels a side")
            size = int(np.prod(dims, dtype=np.int64))
            if size > MAX_BYTES:
                raise UserError(f"{path}: data.{field}: {size:,} bytes of pixels; at most {MAX_BYTES:,} are read")
            check_memory(path, field, dims, size)
            payload = f.read(size + 1)  # one byte more: a file longer than its header says is refused too
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(f"{path}: data.{field}: not a readable idx file ({exc})") from None
    if len(payload) != size:
        raise UserError(f"{path}: data.{field}: header says {dims} ({size:,} bytes), the file holds "
                        f"{len(payload):,}{' or more' if len(payload) > size else ''}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def check_memory(path: Path, field: str, dims: list[int], size: int) -> None:
    """The pixels as float32 (four bytes each, as the stages hold them) must fit in half the free memory: a small
    gzip file can declare, and inflate to, gigabytes."""
    import psutil

    needed, free = size * 5, psutil.virtual_memory().available  # the bytes read, then their float32 copy
    if needed > free // 2:
        raise UserError(f"{path}: data.{field}: header says {dims}: {needed / 2**30:.1f} GiB to hold as float32, "
                        f"more than half of the {free / 2**30:.1f} GiB free; use a smaller file, or a machine with "
                        "more memory")


def read_pair(images: Path, labels: Path, what: str, class_names: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(images, 3, f"{what}images")
    y = read_idx(labels, 1, f"{what}labels").astype(np.int64)
    if len(x) != len(y):
        raise UserError(f"{labels}: data.{what}labels: {len(y):,} labels for {len(x):,} images in {images}")
    limit = len(class_names) if class_names else MAX_CLASSES
    if int(y.max()) >= limit:
        raise UserError(f"{labels}: data.{what}labels: label {int(y.max())}; expected class indices below {limit}")
    # Pixels 0..255 to 0..1, with a channel axis: (N, 1, H, W).
    return (x.astype(np.float32) / 255.0)[:, None], y


def shared(pair: tuple[np.ndarray, np.ndarray], share: float) -> tuple[np.ndarray, np.ndarray]:
    if share >= 1:
        return pair
    from edgedistill.data.sampling import stratified_indices

    picked = stratified_indices(pair[1], max(1, round(share * len(pair[1]))), seed=0)
    return pair[0][picked], pair[1][picked]


def load(spec):
    """(x, y, class names, the given test split or None); with `subset` below 1, that share of each file (a
    seeded draw keeping every class's share)."""
    x, y = shared(read_pair(spec.images, spec.labels, "", spec.class_names), spec.subset)
    test = None
    if spec.test_images is not None:
        test = shared(read_pair(spec.test_images, spec.test_labels, "test_", spec.class_names), spec.subset)
        if test[0].shape[1:] != x.shape[1:]:
            raise UserError(f"{spec.test_images}: data.test_images: images of {test[0].shape[2:]} pixels; the "
                            f"training images are {x.shape[2:]}")
    num_classes = int(max(y.max(), test[1].max() if test else 0)) + 1
    names = spec.class_names or [str(i) for i in range(num_classes)]
    if len(names) != num_classes and not spec.class_names:
        raise UserError(f"{spec.labels}: data.class_names: {len(names)} names for {num_classes} classes")
    return x, y, list(names), test
