"""Per-format export and quantization behind one interface, so the export stage treats formats alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgedistill.quiet import quiet


@dataclass(frozen=True)
class Converter:
    export: Callable[..., Path]  # (model, sample_shape, path, *, opset, metadata) -> path
    quantize: Callable[..., Path]  # (fp32_path, out, precision, calibration_x, method, keep_float) -> path
    set_metadata: Callable[[Path, dict], None]
    first_and_last_layers: Callable[[Path], list[str]]
    calibration_methods: tuple[str, ...]

    def variant(self, fp32_path: Path, out: Path, precision: str, calibration_x: np.ndarray, method: str | None,
                keep_float: list[str], metadata: dict) -> Path:
        """The `precision` version of `fp32_path` at `out`, its metadata saying so; fp32 is the file itself."""
        if precision == "fp32":
            return fp32_path
        self.quantize(fp32_path, out, precision, calibration_x, method, keep_float)
        self.set_metadata(out, {**metadata, "precision": precision, "calibration": method,
                                "kept_float": list(keep_float)})
        return out


def _onnx_export(model, sample_shape, path, *, opset, metadata):
    from edgedistill.export.onnx import torch_to_onnx

    return torch_to_onnx(model, sample_shape, path, opset=opset, metadata=metadata)


def _onnx_quantize(fp32_path, out, precision, calibration_x, method, keep_float):
    from edgedistill.quantize.onnx import quantize_onnx

    with quiet():
        return quantize_onnx(fp32_path, out, precision, calibration_x=calibration_x, method=method or "minmax",
                             keep_float=keep_float)


def _onnx_metadata(path, metadata):
    from edgedistill.export.onnx import set_metadata

    set_metadata(path, metadata)


def _onnx_layers(path):
    from edgedistill.quantize.onnx import first_and_last_layers

    return first_and_last_layers(path)


def _tflite_export(model, sample_shape, path, *, opset, metadata):
    from edgedistill.export.tflite import torch_to_tflite

    with quiet():
        return torch_to_tflite(model, sample_shape, path, metadata=metadata)


def _tflite_quantize(fp32_path, out, precision, calibration_x, method, keep_float):
    from edgedistill.quantize.tflite import quantize_tflite

    with quiet():
        return quantize_tflite(fp32_path, out, precision, calibration_x=calibration_x, keep_float=keep_float)


def _tflite_metadata(path, metadata):
    from edgedistill.export.tflite import write_with_metadata

    write_with_metadata(path.read_bytes(), path, metadata)


def _tflite_layers(path):
    from edgedistill.quantize.tflite import first_and_last_layers

    return first_and_last_layers(path)


CONVERTERS = {
    "onnx": Converter(_onnx_export, _onnx_quantize, _onnx_metadata, _onnx_layers, ("minmax", "entropy", "percentile")),
    # ai-edge-quantizer estimates activation ranges by min/max only.
    "tflite": Converter(_tflite_export, _tflite_quantize, _tflite_metadata, _tflite_layers, ("minmax",)),
}


def read_any_metadata(path: Path) -> dict:
    """The edgedistill metadata of an .onnx or .tflite file."""
    if path.suffix == ".tflite":
        from edgedistill.export.tflite import read_metadata

        return read_metadata(path)
    from edgedistill.export.onnx import read_metadata

    return read_metadata(path)
