"""The contents of the files a stage's config names (data, checkpoints, model folders, a user factory's
source), so that `--resume` reruns a stage whose file was replaced at the same path.

Hashing a multi-GB data file on every resume would be slow, so a file's digest is kept with its size,
mtime and inode in the cache folder and recomputed only when one of those changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edgedistill.errors import UserError
from edgedistill.fileio import atomic_write_json, cache_root, sha256_file, sha256_json

MAX_REMEMBERED = 200_000  # digests kept in the cache file: more than the files of any folder a pipeline reads


def named_paths(section: Any, field: str = "") -> list[Path]:
    """Every file or folder a config section names: Path values, a `path` string that is a folder (a
    Hugging Face model), and the source file of a user factory named by a `family`."""
    if isinstance(section, BaseModel):
        return [p for name in type(section).model_fields for p in named_paths(getattr(section, name), name)]
    if isinstance(section, (list, tuple)):
        return [p for item in section for p in named_paths(item, field)]
    if isinstance(section, Path):
        return [section]
    if isinstance(section, str) and field == "path" and Path(section).is_dir():
        return [Path(section)]
    if isinstance(section, str) and field == "family":
        from edgedistill.models import factory_source

        source = factory_source(section)
        return [source] if source else []
    return []


def files_digest(sections: list[Any]) -> dict[str, str]:
    """{path: content digest} of every file and folder the sections name; a missing one maps to 'missing'."""
    memo = _DigestMemo()
    digests = {}
    for path in (p for section in sections for p in named_paths(section)):
        try:
            digests[str(path)] = memo.folder(path) if path.is_dir() else memo.file(path) if path.is_file() \
                else "missing"
        except OSError as exc:  # an unreadable file or folder: named, in one line
            raise UserError(f"{exc.filename or path}: cannot be read ({exc.strerror or exc})") from None
    memo.save()
    return digests


class _DigestMemo:
    """sha256 of files, remembered by (size, mtime, inode) in the cache folder across runs."""

    def __init__(self):
        self.path = cache_root() / "file-digests.json"
        try:
            known = json.loads(self.path.read_text())
        except (OSError, ValueError):
            known = {}
        self.known = known if isinstance(known, dict) else {}
        self.changed = False

    def file(self, path: Path) -> str:
        stat = path.stat()
        key, stamp = str(path.resolve()), [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = self.known.get(key)
        if isinstance(entry, list) and entry[:3] == stamp and len(entry) == 4:
            return entry[3]
        digest = sha256_file(path)
        self.known.pop(key, None)
        self.known[key] = [*stamp, digest]  # newest last: the oldest are dropped first
        self.changed = True
        return digest

    def folder(self, path: Path) -> str:
        files = sorted(p for p in path.rglob("*") if p.is_file())  # every one: a late file replaced must count
        return sha256_json({str(p.relative_to(path)): self.file(p) for p in files})

    def save(self) -> None:
        if not self.changed:
            return
        kept = dict(list(self.known.items())[-MAX_REMEMBERED:])
        try:
            atomic_write_json(self.path, kept)
        except OSError:
            pass  # only a speed-up: without it, the files are hashed again next time
