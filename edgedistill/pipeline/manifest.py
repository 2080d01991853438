"""manifest.json: per stage its status, inputs digest, outputs (sha256, bytes), timings and error."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgedistill.fileio import atomic_write_json, sha256_file

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


@dataclass
class OutputRecord:
    path: str  # relative to the run directory
    sha256: str
    bytes: int


@dataclass
class StageRecord:
    status: str = "pending"  # pending | running | completed | failed | blocked
    inputs_digest: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    seconds: float | None = None
    outputs: dict[str, OutputRecord] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    resumed: bool = False  # skipped on --resume because inputs and outputs still matched

    def outputs_intact(self, run_dir: Path) -> bool:
        """Every output still exists with the recorded size and hash (a truncated file fails)."""
        for out in self.outputs.values():
            path = run_dir / out.path
            if not path.is_file() or path.stat().st_size != out.bytes or sha256_file(path) != out.sha256:
                return False
        return True


@dataclass
class Manifest:
    pipeline: str
    created_at: float = field(default_factory=time.time)
    schema_version: int = SCHEMA_VERSION
    stages: dict[str, StageRecord] = field(default_factory=dict)

    def save(self, run_dir: Path) -> None:
        atomic_write_json(run_dir / MANIFEST, asdict(self))

    @classmethod
    def load(cls, run_dir: Path) -> "Manifest":
        """The manifest of `run_dir`; one line (UserError) when it is damaged rather than a traceback."""
        from edgedistill.config.loading import read_text_file
        from edgedistill.errors import UserError

        path = run_dir / MANIFEST
        text = read_text_file(path, 64 << 20, "manifest.json")
        try:
            raw = json.loads(text)
            stages = {}
            for name, rec in raw.pop("stages", {}).items():
                outputs = {k: OutputRecord(**v) for k, v in rec.pop("outputs", {}).items()}
                stages[name] = StageRecord(outputs=outputs, **rec)
            manifest = cls(stages=stages, **raw)
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:
            raise UserError(f"{path}: damaged ({' '.join(str(exc).split())[:200]}); start a new run, or delete it "
                            "to rerun every stage of this folder with --resume") from None
        if not all(isinstance(o.path, str) and isinstance(o.sha256, str) and _inside(o.path)
                   for r in stages.values() for o in r.outputs.values()):
            raise UserError(f"{path}: damaged (an output without a sha256, or with a path outside the run folder); "
                            "start a new run")
        return manifest


def _inside(relative: str) -> bool:
    """A recorded output path stays in the run folder: relative, no '..'."""
    path = Path(relative)
    return bool(relative) and not path.is_absolute() and ".." not in path.parts


def record_output(run_dir: Path, path: Path) -> OutputRecord:
    return OutputRecord(str(path.resolve().relative_to(run_dir.resolve())), sha256_file(path), path.stat().st_size)
