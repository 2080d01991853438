"""The export record of one artifact, as every kind of pipeline's export stage writes it (the bench stage and
the report read these fields)."""

from __future__ import annotations

from pathlib import Path


def ok_artifact(fmt: str, precision: str, path: Path, run_dir: Path, parity: dict) -> dict:
    return {"format": fmt, "requested_precision": precision, "precision": precision, "status": "ok",
            "path": str(path.relative_to(run_dir)), "bytes": path.stat().st_size, "parity": parity, "attempts": []}


def failed_artifact(fmt: str, precision: str, error: str) -> dict:
    return {"format": fmt, "requested_precision": precision, "precision": precision, "status": "failed",
            "error": error, "attempts": []}


def one_line(exc: BaseException) -> str:
    """An exception as one line of at most about 300 characters, its type first."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
