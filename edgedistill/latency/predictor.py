"""Latency and memory of a model on a device, predicted from its per-layer cost and the device's figures.

Each layer costs its FLOPs over the device's peak throughput, the bytes it moves over the memory
bandwidth, and a fixed overhead per op; the model adds a fixed overhead per call. With datasheet figures
(no calibration) the efficiencies are 1 and the overheads 0: a roofline lower bound. Calibration fits
one coefficient per term for each format and precision on the device itself (see calibration.py):

    latency_ms = c_conv·t_conv + c_depthwise·t_depthwise + c_linear·t_linear + c_bytes·t_bytes
                 + c_op·ops + c_call

where t_* are the milliseconds at peak (so 1/c is the efficiency the device reaches on that kind).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgedistill.cost import ModelCost

TERMS = ("conv", "depthwise", "linear", "bytes", "op", "call")
DATASHEET = {"conv": 1.0, "depthwise": 1.0, "linear": 1.0, "bytes": 1.0, "op": 0.0, "call": 0.0}


def cost_precision(precision: str) -> str:
    """The arithmetic a precision runs in: dynamic int8 keeps activations in float, fp16 widens on CPUs."""
    return "int8" if precision == "int8" else "fp32"


def terms(cost: ModelCost, hardware, precision: str) -> np.ndarray:
    """The model's cost as milliseconds at the device's peak, per term of the latency model (TERMS)."""
    arithmetic = cost_precision(precision)
    peak = (hardware.peak_gops_int8 if arithmetic == "int8" else hardware.peak_gflops_fp32) * 1e9
    flops = {"conv": 0, "depthwise": 0, "linear": 0}
    for layer in cost.layers:
        if layer.kind in flops:
            flops[layer.kind] += 2 * layer.macs
    moved = cost.weight_bytes(arithmetic) + cost.activation_bytes(arithmetic)
    return np.array([flops["conv"] / peak * 1e3, flops["depthwise"] / peak * 1e3, flops["linear"] / peak * 1e3,
                     moved / (hardware.memory_bandwidth_gbps * 1e9) * 1e3, len(cost.layers), 1.0])


@dataclass(frozen=True)
class Fit:
    """Coefficients for one format and precision, and how well they fit the calibration models."""

    coefficients: dict[str, float]
    p90_over_p50: float = 1.0
    ram_base_mb: float | None = None  # the runtime's own resident memory, before the model's bytes
    models: int = 0
    quality: dict[str, float] = field(default_factory=dict)  # median_abs_error, within_10, within_20


@dataclass(frozen=True)
class Prediction:
    p50_ms: float
    p90_ms: float
    ram_mb: float
    ram_is_lower_bound: bool
    source: str  # "calibrated" | "datasheet"


class LatencyPredictor:
    """Predicts for one device; `fits` maps "format/precision" to calibrated coefficients (may be empty)."""

    def __init__(self, hardware, fits: dict[str, Fit] | None = None):
        self.hardware = hardware
        self.fits = fits or {}

    def source(self, fmt: str, precision: str) -> str:
        return "calibrated" if f"{fmt}/{precision}" in self.fits else "datasheet"

    def predict(self, cost: ModelCost, fmt: str, precision: str) -> Prediction:
        fit = self.fits.get(f"{fmt}/{precision}")
        coefficients = fit.coefficients if fit else DATASHEET
        p50 = float(terms(cost, self.hardware, precision) @ np.array([coefficients[t] for t in TERMS]))
        model_mb = (cost.weight_bytes(cost_precision(precision)) + cost.peak_activation_bytes) / 2**20
        base = fit.ram_base_mb if fit and fit.ram_base_mb is not None else None
        return Prediction(p50, p50 * (fit.p90_over_p50 if fit else 1.0), model_mb + (base or 0.0), base is None,
                          "calibrated" if fit else "datasheet")
