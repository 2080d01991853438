"""A user's .npz file with arrays `x` (N, H, W) or (N, C, H, W) and integer labels `y` (N,).

Read defensively: no pickles, and each array's header (its declared shape and dtype) and its inflated size
in the zip are checked against this machine's free memory before anything is allocated.
"""

from __future__ import annotations

import zipfile

import numpy as np

from edgedistill.errors import UserError

MAX_CLASSES = 100_000  # more than ImageNet-21k; a label past it is a corrupt file, not a task
MAX_SIDE = 4096  # pixels per image side
MAX_CHANNELS = 64
MAX_ABS_VALUE = 1e6  # 16-bit images reach 65,535; beyond this, activations overflow float32


IMAGE_CHANNELS = (1, 3, 4)  # gray, RGB, RGBA


def channels_last(shape: tuple[int, ...], layout: str, path) -> bool:
    """Whether a 4-D x is (N, H, W, C). `auto` decides by where the 1, 3 or 4 channels are; a shape that
    does not say (both places or neither hold such a count, as (N, 3, 3, 3) or (N, 8, 16, 16)) is one line
    asking for data.layout instead of a silent guess."""
    if layout != "auto":
        return layout == "nhwc"
    first, last = shape[1] in IMAGE_CHANNELS, shape[3] in IMAGE_CHANNELS
    if first != last:
        return last
    raise UserError(f"{path}: data.layout: x has shape {tuple(shape)}, which could be (N, C, H, W) or (N, H, W, C); "
                    "set data.layout: nchw or nhwc")


def load(spec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    path = spec.path
    try:
        check_npz(path, ("x", "y"))
        # allow_pickle=False: an .npz must never run code when it is read.
        with np.load(path, allow_pickle=False) as arrays:
            x, y = arrays["x"], arrays["y"]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path}: data.path: not a readable .npz without pickles ({exc})") from None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and channels_last(x.shape, getattr(spec, "layout", "auto"), path):
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.ndim != 4:
        raise UserError(f"{path}: data.path: x has shape {x.shape}; expected (N, H, W), (N, C, H, W) or (N, H, W, C)")
    if len(x) == 0:
        raise UserError(f"{path}: data.path: x holds no samples")
    if x.shape[1] > MAX_CHANNELS or max(x.shape[2:]) > MAX_SIDE:
        raise UserError(f"{path}: data.path: x has shape {x.shape}; expected at most {MAX_CHANNELS} channels and "
                        f"{MAX_SIDE} pixels a side (is the layout (N, C, H, W)?)")
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(f"{path}: data.path: y has shape {y.shape}; expected ({len(x)},) to match x")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise UserError(f"{path}: data.path: y must hold class indices 0..K-1, got dtype {y.dtype} min {y.min()}")
    limit = len(spec.class_names) if spec.class_names else MAX_CLASSES
    if int(y.max()) >= limit:
        valid = f"0..{limit - 1}, one per name in data.class_names" if spec.class_names else \
            f"below {MAX_CLASSES:,} (name the classes in data.class_names)"
        raise UserError(f"{path}: data.path: y holds the label {int(y.max())}; expected class indices {valid}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise UserError(f"{path}: data.path: x must be real numbers, got dtype {x.dtype}")
    with np.errstate(over="ignore"):  # values past float32's range become inf, refused just below
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise UserError(f"{path}: data.path: x holds NaN or inf (or values beyond float32's range)")
    largest = float(np.abs(x).max())
    if largest > MAX_ABS_VALUE:
        raise UserError(f"{path}: data.path: x holds values up to {largest:.3g}; scale it to about 0..1 (or mean 0, "
                        f"std 1): values past {MAX_ABS_VALUE:g} overflow in training")
    num_classes = int(y.max()) + 1
    names = spec.class_names or [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise UserError(f"{path}: data.class_names: {len(names)} names for {num_classes} classes in y")
    return x, y.astype(np.int64), list(names)


def check_npz(path, names: tuple[str, ...], free_fraction: float = 0.5) -> None:
    """Refuse an .npz whose arrays `names` are missing, whose headers do not match what the zip holds, or whose
    arrays (as float32) would take more than `free_fraction` of the memory free now: before reading them."""
    import psutil

    total = 0
    with zipfile.ZipFile(path) as archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        missing = [n for n in names if n not in members]
        if missing:
            raise UserError(f"{path}: data.path: missing array {missing[0]!r} (found: "
                            f"{', '.join(sorted(members)) or 'none'}; expected {' and '.join(names)})")
        for name in names:
            info = members[name]
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                if version not in read:
                    raise ValueError(f"array {name!r}: .npy version {version} (valid: 1.0, 2.0)")
                try:
                    shape, _, dtype = read[version](f, max_header_size=10_000)
                except ValueError:  # numpy's own message ends by advising allow_pickle=True: never here
                    raise UserError(f"{path}: data.path: array {name!r} has a .npy header over 10,000 bytes or "
                                    "malformed; save it with numpy.savez") from None
                header = f.tell()  # what a reader has consumed: magic and header
            declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if dtype.hasobject:
                raise ValueError(f"array {name!r} holds Python objects (pickles are never loaded)")
            if declared != info.file_size - header:
                raise UserError(f"{path}: data.path: array {name!r} declares {shape} {dtype} ({declared:,} bytes) "
                                f"but holds {info.file_size - header:,} bytes; the file is corrupt")
            total += int(np.prod(shape, dtype=np.float64)) * max(dtype.itemsize, 4)
    free = psutil.virtual_memory().available
    if total > free * free_fraction:
        raise UserError(f"{path}: data.path: its arrays take {total / 2**30:.1f} GiB as float32, more than half of "
                        f"the {free / 2**30:.1f} GiB of memory free; use a smaller file")
