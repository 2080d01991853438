"""Parity of an exported artifact against the PyTorch model on the test split."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgedistill.errors import StageFailed


@dataclass
class Parity:
    max_abs_diff: float
    top1_agreement: float
    accuracy: float
    atol: float
    within_tolerance: bool

    def as_dict(self) -> dict:
        return asdict(self)


def compare(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray, atol: float, what: str) -> Parity:
    """Compare outputs; a shape mismatch is fatal, a tolerance miss is reported (the caller warns)."""
    if reference.shape != exported.shape:
        raise StageFailed(f"{what}: output shape {exported.shape} differs from PyTorch's {reference.shape}")
    diff = float(np.max(np.abs(reference - exported))) if reference.size else 0.0
    return Parity(max_abs_diff=diff,
                  top1_agreement=float((reference.argmax(1) == exported.argmax(1)).mean()),
                  accuracy=float((exported.argmax(1) == labels).mean()),
                  atol=atol, within_tolerance=diff <= atol)
