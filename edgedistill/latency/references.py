"""Published measurements on a device: the datasheet roofline scaled to them, until the device is calibrated.

A device profile may list `references` (config/device.py): a model the student families build, the runtime,
precision and threads it ran with, its latency and where that was published. The roofline predicts each (every
coefficient 1: peak throughput and bandwidth, no overheads); the median of measured over predicted, per
arithmetic (fp32, int8), scales every term of the roofline for that arithmetic. Only references run on as many
threads as the profile has cores count: the roofline assumes all of them. A board measured at another clock
counts at the profile's clock, its latency scaled by the clock ratio (compute-bound layers scale so).

It is one factor per arithmetic, not a calibration: it carries the roofline's shape over, so models far from
the references (a sub-millisecond student beside 50-300 M MAC MobileNets) are predicted less well than the
references' own error says. `edgedistill calibrate` on the device replaces it.
"""

from __future__ import annotations

import statistics
from functools import lru_cache

from edgedistill.latency.predictor import DATASHEET, TERMS, Scaled, terms


@lru_cache(maxsize=32)
def _reference_cost(model: str, width: float, resolution: int):
    from edgedistill.cost import model_cost
    from edgedistill.models import build_model

    net = build_model(model, width=width, depth=1.0, in_channels=3, num_classes=1000,
                      input_hw=(resolution, resolution))
    return model_cost(net, (3, resolution, resolution))


def describe(ref) -> str:
    clock = f", {ref.clock_ghz:g} GHz" if ref.clock_ghz else ""
    return (f"{ref.model} x{ref.width:g} {ref.resolution}px {ref.precision} {ref.latency_ms:g} ms ({ref.runtime}, "
            f"{ref.threads} threads{clock}; {ref.source})")


def reference_scales(device) -> dict[str, Scaled]:
    """The roofline's scale per arithmetic from the device's published references ({} when it has none)."""
    hardware = device.hardware
    by_arithmetic: dict[str, list[tuple[float, float, str]]] = {}
    for ref in device.references:
        if ref.threads != hardware.cores:
            continue
        cost = _reference_cost(ref.model, ref.width, ref.resolution)
        predicted = float(terms(cost, hardware, ref.precision) @ [DATASHEET[t] for t in TERMS])
        measured = ref.latency_ms * (ref.clock_ghz / hardware.clock_ghz if ref.clock_ghz else 1.0)
        by_arithmetic.setdefault(ref.precision, []).append((measured, predicted, describe(ref), cost.macs))
    out = {}
    for arithmetic, rows in by_arithmetic.items():
        factor = statistics.median(m / p for m, p, *_ in rows)
        macs = [row[3] for row in rows]
        out[arithmetic] = Scaled(factor, [row[2] for row in rows],
                                 max(abs(factor * p / m - 1) for m, p, *_ in rows), (min(macs), max(macs)))
    return out
