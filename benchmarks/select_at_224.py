"""Does `size: auto` at 224x224 pick a student whose measured p90 matches its prediction?

The host's predictor, fitted by benchmarks/latency_predictor.py on both sets of calibration models (one thread;
its results file), ranks every candidate of a family (widths 1/16-4 x depths 1/2, 1, 2) at 3x224x224 with 2
classes (the ELPV pipeline's shape) under a p90 budget, as `student: {size: auto}` does. The chosen student and
its neighbours by predicted p90 (the two just faster, the one just slower) are exported in the format and
precision judged, and timed on one pinned thread (as calibrated) in interleaved rounds; each measured p90 is put
beside its prediction, and whether the budget would have let it through by either.

Writes benchmarks/results/select_at_224.json and the table between the markers in benchmarks/README.md.
Usage: python benchmarks/select_at_224.py [--budget-ms 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from _readme import update_section
from latency_predictor import host_fits
from rich.progress import Progress

from edgedistill.bench.local import run_local
from edgedistill.config.device import Budgets, host_cpu_flags, load_device
from edgedistill.latency.calibration import measure_all
from edgedistill.latency.predictor import LatencyPredictor
from edgedistill.latency.select import select
from edgedistill.models import build_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "select_at_224.json"
# (family, format, precision) judged: the students of the real-resolution pipelines, in the host's default
# format (ONNX fp32) and in the Pi's (LiteRT int8).
CASES = [("mobilenet_v2", "onnx", "fp32"), ("mobilenet_v2", "tflite", "int8"),
         ("efficientnet_lite0", "onnx", "fp32"), ("efficientnet_lite0", "tflite", "int8")]
SHAPE = dict(in_channels=3, num_classes=2, input_hw=(224, 224))


def neighbours(selection) -> list:
    """The chosen candidate, the two just faster and the one just slower, by predicted p90."""
    by_latency = sorted(selection.candidates, key=lambda c: c.p90_ms)
    at = by_latency.index(selection.chosen)
    return by_latency[max(0, at - 2):at + 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-ms", type=float, default=5.0, help="the p90 budget the candidates are chosen under")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = load_device("host")
    fitted = host_fits(device.hardware)
    if fitted is None:
        raise SystemExit("run benchmarks/latency_predictor.py (both sets) first: no one-thread host fit")
    predictor = LatencyPredictor(device.hardware, fitted[0])
    budgets = Budgets(max_latency_p90_ms=args.budget_ms)
    plan = []
    for family, fmt, precision in CASES:
        selection = select(family, device=device, predictor=predictor, budgets=budgets, fmt=fmt, precision=precision,
                           **SHAPE)
        plan.append(((family, fmt, precision), selection.chosen, neighbours(selection)))

    def bench(path: Path) -> dict:
        return run_local(path, None, threads=1, warmup_runs=10, warmup_s=0.2, runs=50, min_time_s=0.3, timeout_s=300)

    load_before = os.getloadavg()
    rows = []
    with Progress() as progress:
        task = progress.add_task("export and time", total=sum(len(c) for *_, c in plan) * (1 + args.rounds))
        for (family, fmt, precision), chosen, candidates in plan:
            # A case's candidates are timed together, in interleaved rounds.
            models = [(f"{family}-w{c.width:g}-d{c.depth:g}", build_model(family, width=c.width, depth=c.depth,
                                                                          **SHAPE).eval(), (3, 224, 224))
                      for c in candidates]
            records = measure_all(models, formats=[fmt], precisions=[precision], bench=bench, rounds=args.rounds,
                                  on_step=lambda step: progress.advance(task))
            for candidate, record in zip(candidates, records):
                rows.append({"family": family, "format": fmt, "precision": precision, "candidate": candidate.label,
                             "chosen": candidate is chosen, "params": candidate.params, "macs": candidate.macs,
                             "predicted_p90_ms": candidate.p90_ms, "measured_p90_ms": record["p90_ms"],
                             "measured_p50_ms": record["p50_ms"], "fits_predicted": candidate.fits,
                             "fits_measured": record["p90_ms"] <= args.budget_ms,
                             "error": candidate.p90_ms / record["p90_ms"] - 1})
    errors = np.abs([r["error"] for r in rows])
    chosen = [r for r in rows if r["chosen"]]
    summary = {"benchmark": "select_at_224", "date": time.strftime("%Y-%m-%d"), "budget_p90_ms": args.budget_ms,
               "threads": 1, "rounds": args.rounds, "predictor_calibrated_on": fitted[1],
               "cpu_flags": host_cpu_flags(), "load_average_before": load_before,
               "load_average_after": os.getloadavg(), "rows": rows,
               "chosen_within_15": float(np.mean([abs(r["error"]) <= 0.15 for r in chosen])),
               "all_within_15": float(np.mean(errors <= 0.15)), "median_abs_error": float(np.median(errors)),
               "decisions_right": float(np.mean([r["fits_predicted"] == r["fits_measured"] for r in rows]))}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    _update_readme(summary)
    for r in rows:
        print(f"{'→' if r['chosen'] else ' '} {r['candidate']:32s} {r['format']}/{r['precision']}: predicted p90 "
              f"{r['predicted_p90_ms']:.2f} ms, measured {r['measured_p90_ms']:.2f} ms ({r['error']:+.0%})")


def _update_readme(s: dict) -> None:
    rows = [f"{s['date']}, this host (flags: {' '.join(s['cpu_flags'])}), one pinned thread, {s['rounds']} "
            f"interleaved rounds; the host predictor fitted on both calibration sets (latency_predictor.json, "
            f"measured {s['predictor_calibrated_on']} and after); p90 budget {s['budget_p90_ms']:g} ms at "
            f"3×224×224, 2 classes. Load average {s['load_average_before'][0]:.2f} before, "
            f"{s['load_average_after'][0]:.2f} after.", "",
            "| | candidate | format | params | M MACs | predicted p90 ms | measured p90 ms | error | fits: predicted / "
            "measured |", "|---|---|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        rows.append(f"| {'→' if r['chosen'] else ''} | {r['candidate']} | {r['format']} {r['precision']} | "
                    f"{r['params']:,} | {r['macs'] / 1e6:.0f} | {r['predicted_p90_ms']:.2f} | "
                    f"{r['measured_p90_ms']:.2f} | {r['error']:+.0%} | {'yes' if r['fits_predicted'] else 'no'} / "
                    f"{'yes' if r['fits_measured'] else 'no'} |")
    rows += ["", f"Chosen students within ±15 % of their prediction: {s['chosen_within_15']:.0%}; all timed "
             f"candidates: {s['all_within_15']:.0%} (median error {s['median_abs_error']:.1%}); the budget decided "
             f"the same way as the measurement for {s['decisions_right']:.0%} of them."]
    update_section("select_at_224", "## Size auto at 224×224: predicted against measured\n\n"
                   "`python benchmarks/select_at_224.py`", rows)


if __name__ == "__main__":
    main()
