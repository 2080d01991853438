"""The export formats as one table, read by validation, the export stage, benchmarks and tests."""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8")


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    precisions: tuple[str, ...]
    runtime: str  # what the benchmark runner loads it with
    extra: str  # the pip extra that brings the converter and the runtime
    converter: str  # what turns PyTorch into this format
    quantizer: str  # what makes the fp16 / int8 variants


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", ".onnx", PRECISIONS, runtime="onnxruntime", extra="onnx",
                         converter="torch.onnx (TorchScript exporter)",
                         quantizer="onnxruntime.quantization (QDQ static, dynamic), onnxruntime.transformers.float16"),
    "tflite": ExportFormat("tflite", ".tflite", PRECISIONS, runtime="ai_edge_litert", extra="tflite",
                           converter="litert-torch", quantizer="ai-edge-quantizer"),
}


def get_format(name: str) -> ExportFormat:
    from edgedistill.errors import UserError, unknown_choice

    if name not in FORMATS:
        raise UserError(unknown_choice("export format", name, FORMATS))
    return FORMATS[name]


def artifact_name(fmt: str, precision: str) -> str:
    return f"student-{precision}{FORMATS[fmt].suffix}"
