"""One run at a time in a run folder: an advisory lock (fcntl) held for the whole run.

Two runs writing the same folder interleave their stages and one reports the other's numbers; the second
one is stopped before it writes anything, with the holder's PID. The kernel drops the lock when its holder
exits (even on SIGKILL), so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from edgedistill.errors import UserError

LOCK = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock; UserError naming the holder when another process has it."""
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            holder = holder if holder.isdigit() else "unknown"
            raise UserError(f"{run_dir}: another run is using this folder (PID {holder}); wait for it to finish, "
                            "or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
