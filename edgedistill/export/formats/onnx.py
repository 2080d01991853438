"""ONNX: torch.onnx's TorchScript exporter, onnxruntime's quantizers, onnxruntime to run it."""

from __future__ import annotations

from edgedistill.export.formats import ExportFormat
from edgedistill.quiet import quiet


def _require():
    from edgedistill.export.onnx import require_onnx

    require_onnx()


def _export(model, sample_shape, path, *, opset, metadata):
    from edgedistill.export.onnx import torch_to_onnx

    return torch_to_onnx(model, sample_shape, path, opset=opset, metadata=metadata)


def _quantize(fp32_path, out, precision, calibration_x, method, keep_float, reduce_range=False):
    from edgedistill.quantize.onnx import quantize_onnx

    with quiet():
        return quantize_onnx(fp32_path, out, precision, calibration_x=calibration_x, method=method or "minmax",
                             keep_float=keep_float, reduce_range=reduce_range)


def _read_metadata(path):
    from edgedistill.export.onnx import read_metadata

    return read_metadata(path)


def _write_metadata(path, metadata):
    from edgedistill.export.onnx import set_metadata

    set_metadata(path, metadata)


def _layers(path):
    from edgedistill.quantize.onnx import first_and_last_layers

    return first_and_last_layers(path)


def _outputs(path, x):
    from edgedistill.export.onnx import onnx_outputs

    return onnx_outputs(path, x)


FORMAT = ExportFormat(
    name="onnx", suffix=".onnx", runtime="onnxruntime", extra="onnx", color="#1f77b4",
    converter="torch.onnx (TorchScript exporter)",
    quantizer="onnxruntime.quantization (QDQ static, dynamic), onnxruntime.transformers.float16",
    calibration_methods=("minmax", "entropy", "percentile"),
    require=_require, export=_export, quantize=_quantize, read_metadata=_read_metadata,
    write_metadata=_write_metadata, first_and_last_layers=_layers, outputs=_outputs, narrow_weights=True)
