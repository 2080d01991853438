"""TFLite: litert-torch to convert, ai-edge-quantizer for the variants, LiteRT to run it."""

from __future__ import annotations

from edgedistill.export.formats import ExportFormat
from edgedistill.quiet import quiet


def _require():
    from edgedistill.export.tflite import require_litert

    require_litert()


def _export(model, sample_shape, path, *, opset, metadata):
    from edgedistill.export.tflite import torch_to_tflite

    with quiet():
        return torch_to_tflite(model, sample_shape, path, metadata=metadata)


def _quantize(fp32_path, out, precision, calibration_x, method, keep_float, reduce_range=False):
    from edgedistill.quantize.tflite import quantize_tflite

    with quiet():
        return quantize_tflite(fp32_path, out, precision, calibration_x=calibration_x, keep_float=keep_float)


def _read_metadata(path):
    from edgedistill.export.tflite import read_metadata

    return read_metadata(path)


def _write_metadata(path, metadata):
    from edgedistill.export.tflite import write_with_metadata

    write_with_metadata(path.read_bytes(), path, metadata)


def _layers(path):
    from edgedistill.quantize.tflite import first_and_last_layers

    return first_and_last_layers(path)


def _outputs(path, x):
    from edgedistill.export.tflite import tflite_outputs

    return tflite_outputs(path, x)


def _input_quantization(path):
    from edgedistill.export.tflite import input_quantization

    return input_quantization(path)


FORMAT = ExportFormat(
    name="tflite", suffix=".tflite", runtime="tflite", extra="tflite", color="#ff7f0e",
    converter="litert-torch", quantizer="ai-edge-quantizer",
    calibration_methods=("minmax",),  # ai-edge-quantizer estimates activation ranges by min/max only
    require=_require, export=_export, quantize=_quantize, read_metadata=_read_metadata,
    write_metadata=_write_metadata, first_and_last_layers=_layers, outputs=_outputs,
    input_quantization=_input_quantization)
