"""Would another term make the latency predictor better? Leave-one-out on the kept calibration measurements.

For each candidate term (added to edgedistill.latency.predictor.TERMS), per runtime and precision: the predictor
is fitted on all calibration models (micro and real-size, benchmarks/results/latency_predictor.json) but one, and
predicts that one; the share of those predictions within ±20 % and ±10 % is the score. The held-out sets are never
looked at: a term is kept only if it is better on both columns for the runtimes it is meant for.

No measuring: it refits from the kept measurements (run benchmarks/latency_predictor.py first, once per set).
Writes benchmarks/results/predictor_terms.json and the table between the markers in benchmarks/README.md.
Usage: python benchmarks/predictor_terms.py
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _readme import update_section
from latency_predictor import RESULTS, SETS, _section
from scipy.optimize import nnls

from edgedistill.config.device import load_device
from edgedistill.cost import ModelCost, model_cost
from edgedistill.latency.predictor import cost_precision, terms
from edgedistill.precisions import get_precision

OUT = Path(__file__).resolve().parent / "results" / "predictor_terms.json"
KEYS = ("onnx/fp32", "onnx/int8", "tflite/fp32", "tflite/int8")
L2_BYTES = 1 << 20  # this host's L2 per core


def _bytes(layer, precision: str) -> float:
    return (layer.input_bytes + layer.output_bytes) * get_precision(cost_precision(precision)).bytes_per_weight / 4


def candidates(hw) -> dict[str, Callable[[ModelCost, str], float]]:
    """Each candidate term as milliseconds at the device's figures (a count where it is one), like TERMS."""
    bandwidth_ms, cycles_ms = hw.memory_bandwidth_gbps * 1e6, hw.clock_ghz * 1e6
    out = {
        "bytes of layers whose activations exceed the L2 (1 MiB)":
            lambda c, p: sum(_bytes(la, p) for la in c.layers if _bytes(la, p) > L2_BYTES) / bandwidth_ms,
        "depthwise output pixels":
            lambda c, p: sum(la.positions for la in c.layers if la.kind == "depthwise") / cycles_ms,
        "output pixels of every convolution":
            lambda c, p: sum(la.positions for la in c.layers if la.kind in ("conv", "depthwise")) / cycles_ms,
        "ops left in float around int8 (activations not folded, gating products): their count":
            lambda c, p: sum(la.kind in ("activation", "mul") for la in c.layers),
    }
    peak_ms = lambda p: (hw.peak_gops_int8 if cost_precision(p) == "int8" else hw.peak_gflops_fp32) * 1e6  # noqa: E731
    for channels in (16, 32, 64, 96):
        out[f"MACs of dense convolutions under {channels} channels"] = (
            lambda c, p, t=channels: sum(2 * la.macs for la in c.layers if la.kind == "conv" and la.min_channels < t)
            / peak_ms(p))
    for lanes in (16, 64):  # a vector of fp32, of int8 (AVX-512): the work of the channels a kernel pads on
        out[f"MACs lost to padding dense convolutions' channels to {lanes}"] = (
            lambda c, p, n=lanes: sum(2 * la.macs * (math.ceil(la.min_channels / n) * n / la.min_channels - 1)
                                      for la in c.layers if la.kind == "conv" and la.min_channels) / peak_ms(p))
    return out


def _coefficients(rows: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """The calibration's fit (non-negative least squares on relative error), as an array: calibration.fit names
    its coefficients by TERMS and would drop the candidate's."""
    x, y = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    return nnls(x / y[:, None], np.ones(len(y)))[0]


def leave_one_out(rows: list[tuple[np.ndarray, float]]) -> dict[str, float]:
    errors = []
    for i, (x, y) in enumerate(rows):
        errors.append(abs(x @ _coefficients(rows[:i] + rows[i + 1:]) / y - 1))
    errors = np.array(errors)
    return {"within_20": float(np.mean(errors <= 0.2)), "within_10": float(np.mean(errors <= 0.1)),
            "median_abs_error": float(np.median(errors))}


def main() -> None:
    hw = load_device("host").hardware
    everything = json.loads(RESULTS.read_text())
    records, costs = [], {}
    for name, (calibration, _, _) in SETS.items():
        records += [r for r in _section(everything, name)["records"] if r["set"] == "calibration"]
        costs.update({label: model_cost(model, shape) for label, model, shape in calibration()})
    by_key = {key: [r for r in records if f"{r['format']}/{r['precision']}" == key] for key in KEYS}
    kept = {key: [terms(costs[r["model"]], hw, r["precision"]) for r in rs] for key, rs in by_key.items()}
    scores = {}
    for name, term in {"none (kept)": None, **candidates(hw)}.items():
        scores[name] = {}
        for key, rs in by_key.items():
            rows = [(x if term is None else np.append(x, term(costs[r["model"]], r["precision"])), r["p50_ms"])
                    for x, r in zip(kept[key], rs)]
            scores[name][key] = leave_one_out(rows)
        print(name, {k: f"{v['within_20']:.0%}/{v['within_10']:.0%}" for k, v in scores[name].items()})
    summary = {"benchmark": "predictor_terms", "date": time.strftime("%Y-%m-%d"),
               "measured": everything.get("date"), "calibration_models": len({r["model"] for r in records}),
               "scores": scores}
    OUT.write_text(json.dumps(summary, indent=2) + "\n")
    rows = [f"Leave-one-out on the {summary['calibration_models']} calibration models (micro and real-size, measured "
            f"{summary['measured']} and after on this host), refitted {summary['date']}; per ONNX Runtime fp32 / int8, "
            "LiteRT fp32 / int8.", "", "| extra term | LOO within ±20 % | LOO within ±10 % |", "|---|---|---|"]
    for name, by_key in scores.items():
        rows.append(f"| {name} | " + " / ".join(f"{by_key[k]['within_20']:.0%}" for k in KEYS) + " | "
                    + " / ".join(f"{by_key[k]['within_10']:.0%}" for k in KEYS) + " |")
    update_section("predictor_terms", "## Latency predictor: terms tried", rows)


if __name__ == "__main__":
    main()
