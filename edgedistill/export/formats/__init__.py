"""The export formats as one table: every module in this package declares one `FORMAT`, and everything that
handles a format (pipeline and profile validation, the export stage, parity, quantization, calibration, the
CLI, report colours) reads it from `FORMATS`. Adding a format is one module here plus its runtime loader in
`edgedistill/bench/runner.py` (the runner is a single file copied to devices, so it cannot import this one).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from edgedistill.precisions import PRECISIONS as PRECISIONS  # the table: edgedistill/precisions.py


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    runtime: str  # the name device profiles list it under (DeviceProfile.runtimes)
    extra: str  # the pip extra that brings its converter and runtime
    converter: str  # what turns PyTorch into this format (for docs and the report)
    quantizer: str  # what makes its fp16 / int8 variants
    color: str  # its colour in the report's figures
    calibration_methods: tuple[str, ...]  # activation-range estimators of its static int8
    require: Callable[[], None]  # raises UserError naming the extra when the converter is missing
    export: Callable[..., Path]  # (model, sample_shape, path, *, opset, metadata) -> path
    quantize: Callable[..., Path]  # (fp32_path, out, precision, calibration_x, method, keep_float, reduce_range)
    read_metadata: Callable[[Path], dict]
    write_metadata: Callable[[Path, dict], None]
    first_and_last_layers: Callable[[Path], list[str]]  # kept in float by the accuracy gate's second try
    outputs: Callable[[Path, np.ndarray], np.ndarray]  # the artifact's outputs on x, on its runtime's CPU path
    # An integer input's scale and zero point, for the app that feeds the model; None for float inputs.
    input_quantization: Callable[[Path], dict | None] = lambda path: None
    # Whether its static int8 can store 7-bit weights (onnxruntime's reduce_range): x86 integer kernels without
    # VNNI add u8 x s8 products in pairs into 16 bits, which saturate with full 8-bit weights; 7 bits cannot.
    narrow_weights: bool = False

    def variant(self, fp32_path: Path, out: Path, precision: str, calibration_x: np.ndarray | None,
                method: str | None, keep_float: list[str], metadata: dict, reduce_range: bool = False) -> Path:
        """The `precision` version of `fp32_path` at `out`, its metadata saying so; fp32 is the file itself."""
        if precision == "fp32":
            return fp32_path
        self.quantize(fp32_path, out, precision, calibration_x, method, keep_float, reduce_range)
        self.write_metadata(out, {**metadata, "precision": precision, "calibration": method,
                                  "kept_float": list(keep_float), "input_quantization": self.input_quantization(out),
                                  **({"weights": "7-bit (reduce_range)"} if reduce_range else {})})
        return out


def _discover() -> dict[str, ExportFormat]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        fmt = importlib.import_module(f"{__name__}.{info.name}").FORMAT
        found[fmt.name] = fmt
    return found


FORMATS: dict[str, ExportFormat] = _discover()
# For pydantic fields: the format names as a Literal, so validation lists them.
FormatName = Literal[tuple(FORMATS)]  # type: ignore[valid-type]
RuntimeName = Literal[tuple(f.runtime for f in FORMATS.values())]  # type: ignore[valid-type]


def get_format(name: str) -> ExportFormat:
    from edgedistill.errors import UserError, unknown_choice

    if name not in FORMATS:
        raise UserError(unknown_choice("export format", name, FORMATS))
    return FORMATS[name]


def format_of(path: Path) -> ExportFormat:
    """The format of a model file, by its suffix."""
    from edgedistill.errors import UserError, unknown_choice

    for fmt in FORMATS.values():
        if path.suffix == fmt.suffix:
            return fmt
    raise UserError(f"{path}: {unknown_choice('model suffix', path.suffix, [f.suffix for f in FORMATS.values()])}")


def artifact_name(fmt: str, precision: str) -> str:
    return f"student-{precision}{FORMATS[fmt].suffix}"
