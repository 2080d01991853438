"""Folders of image files (JPEG, PNG, ...), decoded on demand: a stage holds the batch it works on, never
the whole data set.

`ImageArray` stands where the other data kinds put a numpy array (N, C, H, W): `len`, `shape`, slicing and
fancy indexing return float32 batches, decoded and preprocessed from the files by a thread pool (Pillow
releases the GIL while it decodes and resizes, so threads decode in parallel without forking workers).

Read defensively: a file's header is read before its pixels, and images over MAX_PIXELS are refused before
they are decoded (a "decompression bomb" is a small file that inflates to gigabytes).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

import numpy as np

from edgedistill.data.npz import MAX_CLASSES
from edgedistill.errors import UserError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_PIXELS = 64_000_000  # 8,000 x 8,000: larger is not a photo a model is trained on here
MAX_FILES = 5_000_000
MATCH_SECONDS = 1.0  # one file name against data.label_pattern
MAX_BATCH_BYTES = 4 * 2**30  # images decoded at once, as float32
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Preprocess:
    """How a file becomes a model input: shorter side resized to `resize`, centre-cropped to `crop` x `crop`,
    read as RGB or gray, then each channel c of the 0..255 pixel values mapped to `value * scale[c] + offset[c]`.

    The per-channel affine is the one form every app can apply; `mean`/`std` (on 0..1 values) and
    `scale`/`offset` in a pipeline both become it (see `from_spec`).
    """

    resize: int
    crop: int
    channels: str  # rgb | gray
    scale: tuple[float, ...]
    offset: tuple[float, ...]

    @classmethod
    def from_spec(cls, spec) -> Preprocess:
        """The preprocessing a pipeline's `data.preprocess` gives; with `mean: auto` the identity on 0..1 values
        until `normalized` replaces it by the training split's statistics."""
        count = 3 if spec.channels == "rgb" else 1
        if spec.mean == "auto":
            scale, offset = (1 / 255,) * count, (0.0,) * count
        elif spec.mean is not None:
            mean, std = per_channel(spec.mean, count, "mean"), per_channel(spec.std, count, "std")
            scale = tuple(1 / (255 * s) for s in std)
            offset = tuple(-m / s for m, s in zip(mean, std))
        else:
            scale, offset = per_channel(spec.scale, count, "scale"), per_channel(spec.offset, count, "offset")
        return cls(spec.resize, spec.crop or spec.resize, spec.channels, scale, offset)

    def describe(self) -> dict:
        """What travels with the model (artifact metadata, report): enough for an app to feed it the same way."""
        return {"resize_shorter_side": self.resize, "center_crop": self.crop, "layout": "NCHW",
                "channels": "RGB" if self.channels == "rgb" else "gray", "pixel_range": "0..255",
                "input = pixel * scale + offset": {"scale": list(self.scale), "offset": list(self.offset)}}

    @classmethod
    def from_description(cls, described: dict, source: str) -> Preprocess:
        """The preprocessing an artifact's metadata describes (`describe`'s output), checked."""
        try:
            affine = described["input = pixel * scale + offset"]
            made = cls(int(described["resize_shorter_side"]), int(described["center_crop"]),
                       {"RGB": "rgb", "gray": "gray"}[described["channels"]],
                       tuple(float(v) for v in affine["scale"]), tuple(float(v) for v in affine["offset"]))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: its metadata describes no image preprocessing (it was not trained on an "
                            "image folder); give --data as an .npz of model inputs") from None
        if not (0 < made.crop <= made.resize <= 4096) or len(made.scale) != made.shape[0]:
            raise UserError(f"{source}: metadata preprocessing {described!r} is not one edgedistill writes")
        return made

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3 if self.channels == "rgb" else 1, self.crop, self.crop)

    def normalized(self, mean: np.ndarray, std: np.ndarray) -> Preprocess:
        """This geometry with (pixel / 255 - mean) / std per channel, as `data.preprocess: {mean: auto}` asks."""
        std = np.maximum(std, 1e-6)
        return Preprocess(self.resize, self.crop, self.channels, tuple(float(1 / (255 * s)) for s in std),
                          tuple(float(-m / s) for m, s in zip(mean, std)))

    def affine(self, pixels: np.ndarray) -> np.ndarray:
        """0..255 pixels (N, C, H, W) or (C, H, W) as model inputs: float32 pixel * scale + offset per channel."""
        return pixels.astype(np.float32) * np.asarray(self.scale, np.float32)[:, None, None] \
            + np.asarray(self.offset, np.float32)[:, None, None]

    def load(self, path: Path) -> np.ndarray:
        """One file as a (C, crop, crop) float32 array."""
        return self.affine(self.pixels(path))

    def pixels(self, path: Path) -> np.ndarray:
        """One file resized and cropped: (C, crop, crop) uint8."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise UserError(f"{path}: data.root: {image.width}x{image.height} pixels; at most "
                                    f"{MAX_PIXELS:,} are decoded")
                # JPEG can decode at 1/2, 1/4, 1/8 scale: no larger than the resize needs.
                image.draft("RGB" if self.channels == "rgb" else "L", (self.resize, self.resize))
                image = image.convert("RGB" if self.channels == "rgb" else "L")
                w, h = image.size
                ratio = self.resize / min(w, h)
                size = (max(self.crop, round(w * ratio)), max(self.crop, round(h * ratio)))
                if size[0] * size[1] > MAX_PIXELS:  # a 1 x 2,000,000 strip is small on disk and huge resized
                    raise UserError(f"{path}: data.root: {w}x{h} pixels would be {size[0]}x{size[1]} after resizing "
                                    f"the shorter side to {self.resize}; at most {MAX_PIXELS:,} pixels are made")
                image = image.resize(size, Image.Resampling.BILINEAR)
                w, h = image.size
                left, top = (w - self.crop) // 2, (h - self.crop) // 2
                pixels = np.asarray(image.crop((left, top, left + self.crop, top + self.crop)), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            raise UserError(f"{path}: data.root: not a readable image ({' '.join(str(exc).split())[:200]})") from None
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def per_channel(values: list[float], count: int, field: str) -> tuple[float, ...]:
    """One value per channel: a single value applies to all."""
    if len(values) == 1:
        return tuple(values) * count
    if len(values) != count:
        raise UserError(f"data.preprocess.{field}: {len(values)} values for {count} channels; give 1 or {count}")
    return tuple(values)


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="decode")


class ImageArray:
    """Images in files, read as a float32 (N, C, H, W) array one batch at a time: decoded from the files, or
    taken from `decoded` (a uint8 array of every file resized and cropped, memory-mapped from the cache; `rows`
    says which of its rows are this array's)."""

    ndim = 4
    dtype = np.dtype(np.float32)

    def __init__(self, paths: list[Path], preprocess: Preprocess, decoded: np.ndarray | None = None,
                 rows: np.ndarray | None = None, file_digests: list[str] | None = None):
        self.paths, self.preprocess = list(paths), preprocess
        self.decoded = decoded
        self.rows = np.arange(len(self.paths)) if rows is None else np.asarray(rows)
        self._file_digests = file_digests

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), *self.preprocess.shape)

    def subset(self, indices) -> ImageArray:
        """The images at `indices`, still on disk (or in the decoded cache)."""
        picked = np.asarray(indices).tolist()
        digests = None if self._file_digests is None else [self._file_digests[i] for i in picked]
        return ImageArray([self.paths[i] for i in picked], self.preprocess, self.decoded, self.rows[picked], digests)

    def with_preprocess(self, preprocess: Preprocess) -> ImageArray:
        return ImageArray(self.paths, preprocess, self.decoded, self.rows, self._file_digests)

    def file_digests(self) -> list[str]:
        """Each file's sha256, computed once."""
        if self._file_digests is None:
            from edgedistill.fileio import sha256_file

            self._file_digests = [sha256_file(path) for path in self.paths]
        return self._file_digests

    def pixel_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation of the 0..1 pixel values (resized and cropped), in float64
        sums over chunks, so the whole array is never held as floats."""
        channels = self.preprocess.shape[0]
        total, squares, count = np.zeros(channels), np.zeros(channels), 0
        for start in range(0, len(self), 256):
            chunk = self.pixels(slice(start, start + 256)).astype(np.float64) / 255
            total += chunk.sum(axis=(0, 2, 3))
            squares += (chunk ** 2).sum(axis=(0, 2, 3))
            count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
        mean = total / max(count, 1)
        return mean, np.sqrt(np.maximum(squares / max(count, 1) - mean ** 2, 0))

    def pixels(self, key) -> np.ndarray:
        """The images at `key` (a slice or indices) as uint8 (N, C, H, W), before the per-channel affine."""
        picked = range(*key.indices(len(self.paths))) if isinstance(key, slice) else key
        if self.decoded is not None:
            return np.asarray(self.decoded[self.rows[list(picked)]])
        batch = np.empty((len(picked), *self.preprocess.shape), np.uint8)
        for i, image in enumerate(_pool().map(self.preprocess.pixels, [self.paths[j] for j in picked])):
            batch[i] = image
        return batch

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[[int(key)]][0]
        if isinstance(key, slice):
            picked = range(*key.indices(len(self.paths)))
        else:
            picked = np.asarray(key.numpy() if hasattr(key, "numpy") else key).reshape(-1)
            picked = (np.flatnonzero(picked) if picked.dtype == bool else picked).tolist()  # a mask, as numpy reads it
        size = len(picked) * int(np.prod(self.preprocess.shape)) * 4
        if size > MAX_BATCH_BYTES:
            channels, side, _ = self.preprocess.shape
            raise UserError(f"data.preprocess: {len(picked):,} images of {channels}x{side}x{side} float32 are "
                            f"{size / 2**30:.1f} GiB at once; at most {MAX_BATCH_BYTES // 2**30} GiB are decoded "
                            "together: lower data.preprocess.crop (or resize), or the batch size")
        return self.preprocess.affine(self.pixels(picked))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def digest(self) -> str:
        """sha256 over every file's bytes, in order, and the preprocessing: what the teacher cache is keyed by."""
        total = hashlib.sha256(repr(self.preprocess).encode())
        for digest in self.file_digests():
            total.update(digest.encode())
        return total.hexdigest()


def image_files(folder: Path, include: str = "*", *, root: Path | None = None,
                follow_links: bool = False) -> list[Path]:
    """Image files under `folder` (any depth), sorted; hidden files and other extensions left out. A symbolic
    link that leads out of `root` (default: `folder`) is refused unless `follow_links`: a class folder linked to
    /usr must not add its images unnoticed. Followed folders are walked once each, so a loop of links ends."""
    boundary = (root or folder).resolve()
    _check_link(folder, boundary, follow_links)
    found, walked = [], set()
    for current, dirs, files in os.walk(folder, onerror=_unreadable, followlinks=follow_links):
        here = Path(current)
        stat = here.stat()
        if (stat.st_dev, stat.st_ino) in walked:
            dirs[:] = []
            continue
        walked.add((stat.st_dev, stat.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in dirs + files:
            _check_link(here / name, boundary, follow_links)
        for name in files:
            path = here / name
            if (name.startswith(".") or path.suffix.lower() not in EXTENSIONS or not path.is_file()
                    or not PurePosixPath(path.relative_to(folder).as_posix()).match(include)):
                continue
            found.append(path)
            if len(found) > MAX_FILES:
                raise UserError(f"{folder}: data.root: more than {MAX_FILES:,} images; at most {MAX_FILES:,} are read")
    return sorted(found)


def _unreadable(error: OSError):
    raise UserError(f"{error.filename}: data.root: cannot be read ({error.strerror or error})")


def _check_link(path: Path, boundary: Path, follow_links: bool) -> None:
    if follow_links or not path.is_symlink():
        return
    target = path.resolve()
    if not target.is_relative_to(boundary):
        raise UserError(f"{path}: data.root: a symbolic link out of {boundary} (to {target}); move the images in, "
                        "or set data.follow_links: true to read through links")


def by_folder(root: Path, class_names: list[str] | None, *, boundary: Path | None = None,
              follow_links: bool = False) -> tuple[list[Path], np.ndarray, list[str]]:
    """`root/<class>/...` images: the class is the first folder under root; classes sorted by name."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = class_names or folders
    unknown = sorted(set(folders) - set(names))
    if unknown:
        raise UserError(f"{root}: data.class_names: folder {unknown[0]!r} is not a class name (valid: "
                        f"{', '.join(names[:10])}{', ...' if len(names) > 10 else ''})")
    paths, labels = [], []
    for label, name in enumerate(names):
        if (root / name).is_dir():
            found = image_files(root / name, root=boundary or root, follow_links=follow_links)
            paths += found
            labels += [label] * len(found)
    return paths, np.asarray(labels, np.int64), list(names)


def by_file_name(root: Path, pattern: str, include: str, *, boundary: Path | None = None,
                 follow_links: bool = False) -> tuple[list[Path], np.ndarray]:
    """Images whose class index is in their file name: the first group of `pattern`."""
    regex = re.compile(pattern)
    paths, labels = [], []
    for path in image_files(root, include, root=boundary, follow_links=follow_links):
        with time_bound(MATCH_SECONDS, f"{path}: data.label_pattern: {pattern!r} took over {MATCH_SECONDS} s on "
                                       "this file name (catastrophic backtracking); simplify it, e.g. _(\\d+)\\."):
            match = regex.search(path.name)
        if match is None or not re.fullmatch(r"[0-9]+", match.group(1) or ""):  # '²' is a digit to isdigit, not to int
            raise UserError(f"{path}: data.label_pattern: {pattern!r} finds no class index in the file name")
        if len(match.group(1)) > 6 or int(match.group(1)) >= MAX_CLASSES:
            raise UserError(f"{path}: data.label_pattern: class {match.group(1)} in the file name; expected class "
                            f"indices below {MAX_CLASSES:,}")
        paths.append(path)
        labels.append(int(match.group(1)))
    return paths, np.asarray(labels, np.int64)


MAX_TABLE_BYTES = 256 * 2**20  # a labels file of 5 million short lines


def by_table(root: Path, spec, *, follow_links: bool = False) -> tuple[list[Path], np.ndarray, list[str]]:
    """Images listed in a labels file under `root` (`data.labels_file`): one image per line, its path relative to
    the file's folder, then columns split by commas (when the line has one) or by spaces; the label is column
    `data.label_column`, mapped to a class by `data.label_map` (default: each distinct label is a class, sorted,
    or in `data.class_names`' order). Blank lines and lines starting with # are skipped."""
    table = (root / spec.labels_file).resolve()
    name = spec.labels_file
    if not table.is_relative_to(root.resolve()) or not table.is_file():
        raise UserError(f"{root}: data.labels_file: {name!r} is not a file under data.root")
    if table.stat().st_size > MAX_TABLE_BYTES:
        raise UserError(f"{table}: data.labels_file: {table.stat().st_size:,} bytes; at most {MAX_TABLE_BYTES:,}")
    folder = table.parent
    rows: list[tuple[int, Path, str]] = []
    with open(table, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fields = [f.strip() for f in text.split(",")] if "," in text else text.split()
            if len(fields) <= spec.label_column:
                raise UserError(f"{table}:{number}: data.label_column: {spec.label_column} but the line has "
                                f"{len(fields)} column(s); expected the image's path, then its label")
            path = folder / fields[0]
            # '..' or a link out of the root is refused; with data.follow_links the link's target may lie outside.
            inside = (Path(os.path.normpath(path)) if follow_links else path.resolve()).is_relative_to(root.resolve())
            if not inside or path.suffix.lower() not in EXTENSIONS:
                raise UserError(f"{table}:{number}: {fields[0]!r}: expected an image file ({', '.join(EXTENSIONS)}) "
                                "under data.root")
            if not path.is_file():
                raise UserError(f"{table}:{number}: {fields[0]!r}: no such image under {folder}")
            rows.append((number, path, fields[spec.label_column]))
            if len(rows) > MAX_FILES:
                raise UserError(f"{table}: data.labels_file: more than {MAX_FILES:,} images")
    if spec.label_map is None:
        found = sorted({label for _, _, label in rows}, key=_label_order)
        names = list(spec.class_names or found)
        mapping = {label: label for label in names}
    else:
        mapping = spec.label_map
        names = list(spec.class_names or dict.fromkeys(mapping.values()))
        stray = sorted(set(mapping.values()) - set(names))
        if stray:
            raise UserError(f"data.label_map: class {stray[0]!r} is not in data.class_names ({', '.join(names)})")
    index = {name: i for i, name in enumerate(names)}
    labels = []
    for number, _, label in rows:
        target = _lookup(mapping, label)
        if target is None or target not in index:
            valid = ", ".join(list(mapping)[:10])
            raise UserError(f"{table}:{number}: label {label!r} (column {spec.label_column}) is not a class; valid: "
                            f"{valid}" + (" (data.label_map)" if spec.label_map is not None else " (data.class_names)"))
        labels.append(index[target])
    return [path for _, path, _ in rows], np.asarray(labels, np.int64), names


def _label_order(label: str):
    """Numbers in numeric order, then text."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _lookup(mapping: dict[str, str], label: str) -> str | None:
    """The class of `label`: by its text, else by its value when both are numbers ('1' and '1.0' are one label)."""
    if label in mapping:
        return mapping[label]
    try:
        value = float(label)
    except ValueError:
        return None
    for written, target in mapping.items():
        try:
            if float(written) == value:
                return target
        except ValueError:
            continue
    return None


MAX_DECODED_BYTES = 8 * 2**30


def decode_once(images: ImageArray) -> ImageArray:
    """`images` backed by a uint8 file of every image resized and cropped, in the cache (fileio.cache_root),
    keyed by the files' contents and the geometry: decoded once, read memory-mapped by every later epoch, stage
    and run. Left as it is (decoded per batch) when that file would pass MAX_DECODED_BYTES or the cache cannot be
    written."""
    from edgedistill.fileio import cache_root, sha256_json

    shape = images.shape
    if int(np.prod(shape)) > MAX_DECODED_BYTES or not len(images):
        return images
    geometry = {"resize": images.preprocess.resize, "crop": images.preprocess.crop,
                "channels": images.preprocess.channels, "files": images.file_digests(), "format": 1}
    path = cache_root() / "images" / f"{sha256_json(geometry)[:32]}.npy"
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), transient=True) as bar:
                task = bar.add_task(f"decoding {len(images):,} images once (cache: {path.name})", total=len(images))
                for start in range(0, len(images), 256):
                    stop = min(start + 256, len(images))
                    out[start:stop] = images.pixels(slice(start, stop))
                    bar.update(task, completed=stop)
            out.flush()
            del out
            os.replace(partial, path)
        decoded = np.load(path, mmap_mode="r")
    except OSError:
        return images
    if decoded.shape != shape or decoded.dtype != np.uint8:
        return images
    return ImageArray(images.paths, images.preprocess, decoded, None, images.file_digests())


@contextmanager
def time_bound(seconds: float, message: str):
    """Raise UserError(message) when the block runs over `seconds`. A regular expression from a pipeline can
    backtrack for hours on one file name; CPython's regex engine checks for signals while it matches, so a
    timer signal stops it. Outside the main thread (no signals there) the block runs unbounded."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(*_):
        raise _Expired

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Expired:
        raise UserError(message) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Expired(Exception):
    pass


def read_folder(root: Path, spec) -> tuple[ImageArray, np.ndarray, list[str]]:
    """The images of one folder, labelled as the pipeline says; an empty folder is an error."""
    preprocess = Preprocess.from_spec(spec.preprocess)
    links = {"boundary": spec.root, "follow_links": spec.follow_links}
    if spec.labels_from == "folders":
        paths, labels, names = by_folder(root, spec.class_names, **links)
    elif spec.labels_from == "table":
        paths, labels, names = by_table(root, spec, follow_links=spec.follow_links)
    else:
        paths, labels = by_file_name(root, spec.label_pattern, spec.include, **links)
        count = len(spec.class_names) if spec.class_names else spec.num_classes
        if count is None:
            count = int(labels.max()) + 1 if len(labels) else 0
        if len(labels) and labels.max() >= count:
            raise UserError(f"{root}: data.num_classes: a file name holds class {int(labels.max())}; expected "
                            f"class indices below {count}")
        names = spec.class_names or [str(i) for i in range(count)]
    if not paths:
        expected = {"folders": "root/<class>/<image>", "table": f"images listed in {spec.labels_file}",
                    "filename": f"files matching {spec.include!r} with a class index found by {spec.label_pattern!r}"}
        raise UserError(f"{root}: data.root: no images found (extensions: {', '.join(EXTENSIONS)}); expected "
                        + expected[spec.labels_from])
    images = ImageArray(paths, preprocess)
    return (decode_once(images) if spec.decoded_cache == "auto" else images), labels, names


def load(spec):
    """(images, labels, class names, the given test split or None, the given validation split or None).

    With `root/train`, `root/test` (and optionally `root/val`), those are the splits."""
    root = spec.root
    given = {name: root / name for name in SPLITS if (root / name).is_dir()}
    if "train" not in given or "test" not in given:
        x, y, names = read_folder(root, spec)
        return x, y, names, None, None
    x, y, names = read_folder(given["train"], spec)
    spec_names = spec.model_copy(update={"class_names": names}) if spec.labels_from == "folders" else spec
    test = read_folder(given["test"], spec_names)[:2]
    val = read_folder(given["val"], spec_names)[:2] if "val" in given else None
    return x, y, names, test, val


def _folder_id(folder: Path) -> str:
    return hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]


def trained_on(root: Path) -> dict:
    """What an artifact's metadata keeps of the folder it was trained on: its path's digest (not the path,
    which would travel with the model to the device) and whether it had its own test split."""
    return {"folder_id": _folder_id(root), "test_split_given": (root / "test").is_dir() and (root / "train").is_dir()}


def holds_training_images(folder: Path, trained: dict | None) -> bool:
    """Whether `folder` holds images the model was trained on (by the metadata's `trained_on`): the training root
    itself, its train/ or val/ split, or, when the test split was drawn from the root, any folder inside it."""
    if not isinstance(trained, dict) or not isinstance(trained.get("folder_id"), str):
        return False
    folder = folder.resolve()
    if _folder_id(folder) == trained["folder_id"]:
        return True
    if _folder_id(folder.parent) == trained["folder_id"] and folder.name in ("train", "val"):
        return True
    return not trained.get("test_split_given") and any(_folder_id(p) == trained["folder_id"] for p in folder.parents)


def folder_as_arrays(folder: Path, metadata: dict, limit: int, source: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(x, y, images found) for `edgedistill bench --data FOLDER`: `folder/<class>/<image>` read with the
    preprocessing the model's metadata carries, labelled by its class names; an even draw of at most `limit`
    images (seeded), so what is shipped to a device stays bounded."""
    preprocess = Preprocess.from_description(metadata.get("preprocessing") or {}, source)
    names = metadata.get("class_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{source}: its metadata lists no class names to label {folder}'s folders with")
    paths, labels, _ = by_folder(folder, names)
    if not paths:
        raise UserError(f"{folder}: --data: no images in class folders named as the model's classes "
                        f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    found = len(paths)
    if found > limit:
        from edgedistill.data.sampling import stratified_indices

        picked = stratified_indices(labels, limit, seed=0)
        paths, labels = [paths[i] for i in picked], labels[picked]
    return ImageArray(paths, preprocess)[:], labels, found
