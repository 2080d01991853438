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


def artifact_outputs(fmt: str, path, x: np.ndarray) -> np.ndarray:
    """An exported artifact's outputs on `x`, on its runtime's CPU path."""
    if fmt == "tflite":
        from edgedistill.export.tflite import tflite_outputs

        return tflite_outputs(path, x)
    return onnx_outputs(path, x)


def onnx_outputs(path, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)])
