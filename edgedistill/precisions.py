"""The deployment precisions, one table: what each quantizes, the bytes the cost model counts per weight, the
arithmetic the latency predictor prices it at, how parity judges it, and what the accuracy gate does with it.
Validation, the export stage, the gate, the cost model, the predictor, the `quantize` command and the report read
it; only the quantizers themselves (quantize/onnx.py, quantize/tflite.py) say how each is made in a format.

(Training precisions, fp32/bf16/fp16 autocast, are another concept: distill/compute.py.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    name: str
    weight_bits: int  # the weights as stored
    activations: str  # "float", "int8 at run time" (ranges measured per tensor while running), "int8 calibrated"
    arithmetic: str  # what the latency predictor prices it at: "int8" only where activations are integers too
    parity: str  # "exact" (fp32: an absolute tolerance), "relative" (fp16), "agreement" (int8: top-1 agreement)
    needs_calibration: bool  # static activation ranges from calibration data
    keep_float_retry: bool  # the gate's second try keeps the first and last layers in float
    formats: tuple[str, ...] = ("onnx", "tflite")
    note: str = ""

    @property
    def bytes_per_weight(self) -> float:
        return self.weight_bits / 8

    @property
    def integer(self) -> bool:
        """Stored as integers: outputs move by design, and the accuracy gate judges them."""
        return self.weight_bits == 8


TABLE: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", 32, "float", "fp32", "exact", False, False, note="the exported model as trained"),
    Precision("fp16", 16, "float", "fp32", "relative", False, False,
              note="half-size weights; CPUs widen them to fp32 to compute"),
    Precision("int8-weights", 8, "float", "fp32", "agreement", False, True,
              note="int8 weights in blocks, float activations (the MatMuls of transformers)"),
    Precision("int8-dynamic", 8, "int8 at run time", "fp32", "agreement", False, True,
              note="int8 weights; activations quantized per tensor at run time (slow for convolutions)"),
    Precision("int8", 8, "int8 calibrated", "int8", "agreement", True, True,
              note="static int8: weights and calibrated activation ranges, integer kernels end to end"),
)}
PRECISIONS = tuple(TABLE)
QUANTIZED = tuple(name for name in PRECISIONS if name != "fp32")
# What the accuracy gate falls back to, in order, when a quantized artifact drops too much accuracy.
GATE_FALLBACKS = ("fp16", "fp32")


def get_precision(name: str) -> Precision:
    """The precision `name`; a KeyError names the valid ones."""
    try:
        return TABLE[name]
    except KeyError:
        raise KeyError(f"unknown precision {name!r} (valid: {', '.join(PRECISIONS)})") from None
