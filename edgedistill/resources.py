"""Where the bundled pipelines and device profiles live, for editable and wheel installs alike."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def bundled_dir(name: str) -> Path:
    """The folder `pipelines` or `devices`: inside the wheel, else at the top of the source checkout."""
    for candidate in (_PACKAGE / "_bundled" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"bundled folder {name!r} not found next to {_PACKAGE}")


def default_pipeline() -> Path:
    """The quickstart pipeline that `edgedistill run` runs when given no file."""
    return bundled_dir("pipelines") / "quickstart.yaml"
