"""The export formats as one table, read by validation, the export stage, benchmarks and tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    precisions: tuple[str, ...]
    runtime: str  # the runtime the benchmark runner loads it with
    extra: str  # pip extra that brings the converter and runtime
    options: tuple[str, ...] = ()


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", ".onnx", ("fp32",), runtime="onnxruntime", extra="onnx",
                         options=("opset", "parity_atol")),
}


def get_format(name: str) -> ExportFormat:
    from edgedistill.errors import UserError, unknown_choice

    if name not in FORMATS:
        raise UserError(unknown_choice("export format", name, FORMATS))
    return FORMATS[name]
