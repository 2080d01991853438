"""How good is the latency predictor? Calibrate on this host, then predict and measure held-out models.

Calibration runs the micro-models of edgedistill.latency.calibration (plain conv, inverted-residual,
downsampling-stage and MLP stacks). The held-out set is 24 student-family models (ResNet and MobileNetV2
styles) at different widths, depths, input resolutions and channels, none of them used in calibration.
Every model runs in ONNX Runtime and LiteRT, fp32 and static int8, through the same runner as
`edgedistill bench`.

Writes benchmarks/results/latency_predictor.json (with every raw measurement, so `--refit` can refit
without measuring again) and the table between the markers in benchmarks/README.md.
Usage: python benchmarks/latency_predictor.py [--formats onnx,tflite] [--precisions fp32,int8] [--refit]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from _readme import update_section
from rich.progress import Progress

from edgedistill.bench.local import run_local
from edgedistill.config.device import host_cpu_flags, load_device
from edgedistill.cost import model_cost
from edgedistill.latency.calibration import ROUNDS, fit_all, measure_all, micro_models, quality, real_size_models
from edgedistill.models import build_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "latency_predictor.json"

# (family, width, depth, input channels, resolution): 24 variants, none a calibration micro-model.
HELD_OUT = [
    ("resnet", 0.25, 0.5, 1, 8), ("resnet", 0.5, 1.0, 1, 8), ("resnet", 1.0, 1.0, 1, 8), ("resnet", 1.5, 0.5, 3, 8),
    ("resnet", 0.25, 2.0, 3, 16), ("resnet", 0.5, 0.5, 3, 16), ("resnet", 0.75, 1.0, 1, 16),
    ("resnet", 1.0, 2.0, 3, 16), ("resnet", 0.25, 1.0, 3, 32), ("resnet", 0.5, 2.0, 1, 32),
    ("resnet", 0.125, 1.0, 3, 32), ("resnet", 1.0, 0.5, 3, 32),
    ("mobilenetv2", 0.25, 0.5, 1, 8), ("mobilenetv2", 0.5, 1.0, 1, 8), ("mobilenetv2", 1.0, 1.0, 1, 8),
    ("mobilenetv2", 2.0, 0.5, 3, 8), ("mobilenetv2", 0.25, 2.0, 3, 16), ("mobilenetv2", 0.75, 1.0, 3, 16),
    ("mobilenetv2", 1.5, 1.0, 1, 16), ("mobilenetv2", 0.5, 0.5, 3, 16), ("mobilenetv2", 0.125, 1.0, 3, 32),
    ("mobilenetv2", 0.5, 2.0, 1, 32), ("mobilenetv2", 1.0, 0.5, 3, 32), ("mobilenetv2", 0.35, 1.0, 3, 24),
]


# The real-size held-out set, fixed before any fit on real-size measurements: the published families at several
# widths and resolutions, 1000 classes, random weights (timing does not depend on them).
REAL_HELD_OUT = [
    ("mobilenet_v2", 1.0, 224), ("mobilenet_v2", 1.0, 160), ("mobilenet_v2", 1.0, 96), ("mobilenet_v2", 0.75, 192),
    ("mobilenet_v2", 0.75, 128), ("mobilenet_v2", 0.5, 224), ("mobilenet_v2", 0.5, 160), ("mobilenet_v2", 0.35, 224),
    ("mobilenet_v2", 0.35, 128), ("mobilenet_v3_small", 1.0, 224), ("mobilenet_v3_small", 1.0, 160),
    ("mobilenet_v3_small", 0.75, 224), ("mobilenet_v3_large", 1.0, 224), ("mobilenet_v3_large", 1.0, 128),
    ("efficientnet_lite0", 1.0, 224), ("efficientnet_lite0", 1.0, 160),
]


def real_held_out_models():
    out = []
    for family, width, hw in REAL_HELD_OUT:
        model = build_model(family, width=width, depth=1.0, in_channels=3, num_classes=1000, input_hw=(hw, hw))
        out.append((f"{family}-w{width:g}-{hw}px", model.eval(), (3, hw, hw)))
    return out


def held_out_models():
    out = []
    for family, width, depth, channels, hw in HELD_OUT:
        model = build_model(family, width=width, depth=depth, in_channels=channels, num_classes=10, input_hw=(hw, hw))
        out.append((f"{family}-w{width:g}-d{depth:g}-c{channels}-{hw}px", model.eval(), (channels, hw, hw)))
    return out


SETS = {  # name: (calibration models, held-out models, how the README names the held-out set)
    "micro": (micro_models, held_out_models, "held-out family models (ResNet / MobileNetV2 style, 8–32 px, 1 or 3 "
                                             "channels)"),
    "real": (real_size_models, real_held_out_models, "held-out real-size models (MobileNetV2 ×0.35–1.0, "
                                                     "MobileNetV3-Small/Large, EfficientNet-Lite0; 96–224 px)"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=list(SETS), default="micro",
                        help="micro: sub-millisecond models (calibration micro-models, 8-32 px families); real: "
                             "real-size models (96-224 px); the results file keeps each set apart")
    parser.add_argument("--formats", default="onnx,tflite")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--refit", action="store_true", help="reuse the raw measurements in the results file")
    parser.add_argument("--threads", type=int, default=1,
                        help="runtime threads (1: at 2 threads on this shared 2-core machine the same model's p50 "
                             "moved by up to 3x between two measurements)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="timing rounds per artifact; the quietest counts")
    args = parser.parse_args()
    device = load_device("host")
    calibration_set, held_out = SETS[args.set][0](), SETS[args.set][1]()
    costs = {label: model_cost(model, shape) for label, model, shape in calibration_set + held_out}
    everything = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    previous = _section(everything, args.set)
    if args.refit:
        records, date, threads = previous["records"], previous["date"], previous["threads"]
    else:
        threads = args.threads
        # Real-size models run for milliseconds: fewer runs give as many seconds of timing per round.
        runs, min_time_s = (200, 0.5) if args.set == "micro" else (50, 0.3)

        def bench(path: Path) -> dict:
            return run_local(path, None, threads=threads, warmup_runs=10, warmup_s=0.2, runs=runs,
                             min_time_s=min_time_s, timeout_s=300)

        formats, precisions = args.formats.split(","), args.precisions.split(",")
        models = calibration_set + held_out
        load_before = os.getloadavg()
        with Progress() as progress:
            steps = len(models) * len(formats) * len(precisions) * (1 + args.rounds)
            task = progress.add_task("measure", total=steps)
            records = measure_all(models, formats=formats, precisions=precisions, bench=bench, rounds=args.rounds,
                                  on_step=lambda label: progress.advance(task))
        for r in records:
            r["set"] = "held-out" if r["model"] in {label for label, _, _ in held_out} else "calibration"
        date = time.strftime("%Y-%m-%d")
        previous = {"load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "cpu_flags": host_cpu_flags(), "records": records, "date": date, "threads": threads}
        # The raw measurements are kept before any fit, so `--refit` can always start from them.
        _save(everything, previous, args.set)
    # One predictor for every size: the other set's calibration models join the fit (same threads).
    other = "real" if args.set == "micro" else "micro"
    joined = [r for r in _section(everything, other).get("records", []) if r["set"] == "calibration"]
    if joined and _section(everything, other).get("threads") == threads:
        costs.update({label: model_cost(model, shape) for label, model, shape in SETS[other][0]()})
    else:
        joined = []
    summary = evaluate(records, joined, costs, device, held_out)
    summary["calibration_models"] = {args.set: len(calibration_set), other: len({r["model"] for r in joined})}
    summary.update({k: previous[k] for k in ("load_average_before", "load_average_after", "cpu_flags")
                    if k in previous})
    summary.update(date=date, threads=threads, set=args.set)
    _save(everything, summary, args.set)
    _update_readme(summary, args.set)
    for key, k in summary["keys"].items():
        h = k["held_out"]
        print(f"{key:12s} held-out within ±10 % {h['within_10']:.0%}, ±20 % {h['within_20']:.0%}, "
              f"median error {h['median_abs_error']:.1%}  (in-sample ±20 % {k['in_sample']['within_20']:.0%})")
    o = summary["overall_held_out"]
    print(f"overall: {o['predictions']} predictions, ±10 % {o['within_10']:.0%}, ±20 % {o['within_20']:.0%}")


def _section(everything: dict, name: str) -> dict:
    return everything if name == "micro" else everything.get("real_size", {})


def host_fits(hardware) -> tuple[dict, str] | None:
    """The host predictor's fits from this script's results file (both sets' calibration models, one thread),
    and the date measured; None without a one-thread results file."""
    if not RESULTS.is_file():
        return None
    everything = json.loads(RESULTS.read_text())
    records, costs = [], {}
    for name, (calibration, _, _) in SETS.items():
        section = _section(everything, name)
        if section.get("threads") == 1:
            records += [r for r in section["records"] if r["set"] == "calibration"]
            costs.update({label: model_cost(model, shape) for label, model, shape in calibration()})
    return (fit_all(records, costs, hardware), everything["date"]) if records else None


def evaluate(records: list[dict], joined: list[dict], costs: dict, device, held_out: list) -> dict:
    """Fit on the calibration records (with `joined`, the other set's), predict the held-out ones (each record
    gets its predicted_p50_ms)."""
    from edgedistill.latency.predictor import LatencyPredictor

    rounds = len(records[0].get("p50_rounds_ms", [None]))
    fits = fit_all([r for r in records if r["set"] == "calibration"] + joined, costs, device.hardware)
    predictor = LatencyPredictor(device.hardware, fits)
    summary = {"benchmark": "latency_predictor", "rounds": rounds, "processor": str(device.hardware.processor),
               "held_out_models": len(held_out), "keys": {}, "records": records}
    for key, fit in fits.items():
        fmt, precision = key.split("/")
        rows = [r for r in records if r["set"] == "held-out" and f"{r['format']}/{r['precision']}" == key]
        predicted = [predictor.predict(costs[r["model"]], fmt, precision).p50_ms for r in rows]
        measured = [r["p50_ms"] for r in rows]
        for r, p in zip(rows, predicted):
            r["predicted_p50_ms"] = p
        summary["keys"][key] = {"in_sample": fit.quality, "held_out": quality(predicted, measured),
                                "coefficients": fit.coefficients,
                                "measured_ms_range": [min(measured), max(measured)] if measured else None}
    every = [abs(r["predicted_p50_ms"] / r["p50_ms"] - 1) for r in records if "predicted_p50_ms" in r]
    summary["overall_held_out"] = {"predictions": len(every), "within_10": float(np.mean(np.array(every) <= 0.1)),
                                   "within_20": float(np.mean(np.array(every) <= 0.2)),
                                   "median_abs_error": statistics.median(every)}
    return summary


def _save(everything: dict, section: dict, name: str) -> None:
    """The results file: the micro set at the top level (as before the real-size set), the real one under
    `real_size`."""
    if name == "micro":
        everything = {**section, **({"real_size": everything["real_size"]} if "real_size" in everything else {})}
    else:
        everything["real_size"] = section
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(everything, indent=2) + "\n")


def _update_readme(s: dict, name: str) -> None:
    rows = [f"Host {s['processor']}, {s['threads']} thread(s); every artifact timed in {s['rounds']} interleaved "
            "rounds, "
            f"the quietest round's p50 kept; one predictor fitted on "
            f"{' + '.join(f'{n} {name}' for name, n in s['calibration_models'].items())} calibration models, "
            f"{s['held_out_models']} {SETS[name][2]}; {s['date']}.", "",
            "| runtime / precision | held-out within ±10 % | within ±20 % | median abs error | measured p50 range (ms) "
            "| in-sample within ±20 % |", "|---|---|---|---|---|---|"]
    for key, k in s["keys"].items():
        h, lo_hi = k["held_out"], k["measured_ms_range"] or [0, 0]
        rows.append(f"| {key} | {h['within_10']:.0%} | {h['within_20']:.0%} | {h['median_abs_error']:.1%} | "
                    f"{lo_hi[0]:.3f}–{lo_hi[1]:.3f} | {k['in_sample']['within_20']:.0%} |")
    o = s["overall_held_out"]
    rows.append(f"| **all** | **{o['within_10']:.0%}** | **{o['within_20']:.0%}** | "
                f"**{o['median_abs_error']:.1%}** | | |")
    if name == "micro":
        update_section("latency_predictor", "## Latency predictor\n\n`python benchmarks/latency_predictor.py` — "
                       "calibrate on this host, then predict held-out models.", rows)
    else:
        update_section("latency_predictor_real", "## Latency predictor at real size\n\n`python "
                       "benchmarks/latency_predictor.py --set real`", rows)


if __name__ == "__main__":
    main()
