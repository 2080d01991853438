"""Latency and memory of a model on a device, predicted from its per-layer cost and the device's figures.

Each layer costs its FLOPs over the device's peak throughput, the activation bytes it reads and writes
over the memory bandwidth, and a fixed overhead per op; the weights cost their bytes over the bandwidth;
the model adds a fixed overhead per call. A dense convolution with fewer channels than one vector register
holds floats (a 3-channel stem, a 4-channel student) cannot fill the vector units: it pays per output pixel,
whatever its FLOPs (one cycle per pixel in the term). Every term is a time at the device's peak, in
milliseconds:

    latency_ms = Σ_term c_term · t_term      (TERMS: FLOPs and activation bytes per layer kind, thin-conv
                                              pixels, weights, ops, call)

With datasheet figures (no calibration) every c is 1 and the overheads 0: a roofline lower bound.
Calibration fits the c's for each format and precision on the device itself (see calibration.py); 1/c
is the efficiency the runtime reaches on that kind of work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgedistill.cost import ModelCost
from edgedistill.precisions import get_precision

# Dense convolutions are bound by arithmetic and by moving their activations; depthwise ones by moving
# activations; linear layers at batch 1 by their weights (counted in their FLOPs, 2 per weight);
# pooling, residual additions and gating products only move activations; so do the activations runtimes do
# not fold (hard-swish, sigmoid: a term of their own, as some kernels run them outside the fast path).
# Overheads (thin convolutions' pixels, ops, the call) have no datasheet figure.
TERMS = ("conv_flops", "conv_act", "depthwise_flops", "depthwise_act", "linear_flops", "elementwise_act",
         "activation_act", "thin_conv", "weights", "op", "call")
OVERHEADS = ("thin_conv", "op", "call")
DATASHEET = {t: 0.0 if t in OVERHEADS else 1.0 for t in TERMS}
KIND_TERMS = {"conv": ("conv_flops", "conv_act"), "depthwise": ("depthwise_flops", "depthwise_act"),
              "linear": ("linear_flops", "elementwise_act"), "pool": (None, "elementwise_act"),
              "add": (None, "elementwise_act"), "mul": (None, "elementwise_act"),
              "activation": (None, "activation_act")}


def cost_precision(precision: str) -> str:
    """The arithmetic a precision runs in: dynamic int8 keeps activations in float, fp16 widens on CPUs."""
    return get_precision(precision).arithmetic


def terms(cost: ModelCost, hardware, precision: str) -> np.ndarray:
    """The model's cost as milliseconds at the device's peak, per term of the latency model (TERMS)."""
    arithmetic = cost_precision(precision)
    peak_ms = (hardware.peak_gops_int8 if arithmetic == "int8" else hardware.peak_gflops_fp32) * 1e9 / 1e3
    bandwidth_ms = hardware.memory_bandwidth_gbps * 1e9 / 1e3
    cycles_ms = hardware.clock_ghz * 1e9 / 1e3
    value_bytes = get_precision(arithmetic).bytes_per_weight / 4  # the layer counts are fp32 bytes
    out = dict.fromkeys(TERMS, 0.0)
    for layer in cost.layers:
        flops_term, act_term = KIND_TERMS[layer.kind]
        if flops_term:
            out[flops_term] += 2 * layer.macs / peak_ms
        out[act_term] += (layer.input_bytes + layer.output_bytes) * value_bytes / bandwidth_ms
        if layer.kind == "conv" and layer.min_channels < hardware.vector_lanes_fp32:
            out["thin_conv"] += layer.positions / cycles_ms
    out["weights"] = cost.weight_bytes(arithmetic) / bandwidth_ms
    out["op"], out["call"] = len(cost.layers), 1.0
    return np.array([out[t] for t in TERMS])


def model_memory_mb(cost: ModelCost, precision: str) -> float:
    """What the model itself needs in memory: its weights and its largest layer's activations."""
    return (cost.weight_bytes(cost_precision(precision)) + cost.peak_activation_bytes) / 2**20


@dataclass(frozen=True)
class Fit:
    """Coefficients for one format and precision, and how well they fit the calibration models."""

    coefficients: dict[str, float]
    p90_over_p50: float = 1.0
    ram_base_mb: float | None = None  # the runtime's own resident memory, before the model's bytes
    models: int = 0
    quality: dict[str, float] = field(default_factory=dict)  # median_abs_error, within_10, within_20


@dataclass(frozen=True)
class Scaled:
    """The datasheet roofline scaled to measurements published for the device (latency/references.py)."""

    factor: float  # measured over the roofline's prediction, the median over the references
    references: list[str]  # what each was, for the report
    max_error: float  # the scaled roofline's largest relative error on them
    macs: tuple[int, int] = (0, 0)  # the smallest and largest reference model's multiply-accumulates


@dataclass(frozen=True)
class Prediction:
    p50_ms: float
    p90_ms: float
    ram_mb: float
    ram_is_lower_bound: bool
    source: str  # "calibrated" | "published" (scaled to published measurements) | "datasheet"


class LatencyPredictor:
    """Predicts for one device; `fits` maps "format/precision" to calibrated coefficients (may be empty);
    `scaled` maps an arithmetic (fp32, int8) to the roofline's scale from published measurements, used where
    no calibrated fit is."""

    def __init__(self, hardware, fits: dict[str, Fit] | None = None, scaled: dict[str, Scaled] | None = None):
        self.hardware = hardware
        self.fits = fits or {}
        self.scaled = scaled or {}

    def source(self, fmt: str, precision: str) -> str:
        if f"{fmt}/{precision}" in self.fits:
            return "calibrated"
        return "published" if cost_precision(precision) in self.scaled else "datasheet"

    def caveat(self, cost: ModelCost, fmt: str, precision: str) -> str | None:
        """A note when a prediction scaled to published measurements is for a model far (10x) from their size:
        the roofline has no per-call or per-op overheads, which dominate a small model."""
        if self.source(fmt, precision) != "published":
            return None
        low, high = self.scaled[cost_precision(precision)].macs
        if low / 10 <= cost.macs <= high * 10:
            return None
        return (f"this model has {cost.macs / 1e6:.3g} M MACs, the published ones {low / 1e6:.3g}–{high / 1e6:.3g} M: "
                "overheads the roofline leaves out weigh more in a model so far from them")

    def predict(self, cost: ModelCost, fmt: str, precision: str) -> Prediction:
        fit = self.fits.get(f"{fmt}/{precision}")
        scaled = self.scaled.get(cost_precision(precision))
        if fit:
            coefficients = fit.coefficients
        else:
            coefficients = {t: c * (scaled.factor if scaled else 1.0) for t, c in DATASHEET.items()}
        p50 = float(terms(cost, self.hardware, precision) @ np.array([coefficients[t] for t in TERMS]))
        model_mb = model_memory_mb(cost, precision)
        base = fit.ram_base_mb if fit and fit.ram_base_mb is not None else None
        return Prediction(p50, p50 * (fit.p90_over_p50 if fit else 1.0), model_mb + (base or 0.0), base is None,
                          self.source(fmt, precision))
