"""The 224x224 models side by side: the released ImageNet EfficientNet-Lite0 teacher and the students
(MobileNetV2 x1.0 and x0.35, MobileNetV3-Large and -Small), each exported to ONNX and TFLite at fp32 and static
int8, checked for parity and timed with the bench runner on one pinned thread in interleaved rounds.

Inputs: foolbox's 20 ImageNet photos at the released Lite0's preprocessing (calibration and parity). The
students are randomly initialised (their speed and size do not depend on their weights; parity is checked on the
same photos). Beside each measurement: the Raspberry Pi 4 profile's prediction (its roofline scaled to the
latencies it cites; an uncalibrated roofline where it cites none for that arithmetic) and, where
a measurement on a real board is published, that figure with its source.

The host's latency predictor, calibrated on the micro and real-size calibration models by
benchmarks/latency_predictor.py (its results file),
predicts each artifact's one-thread p50 here: the held-out check of real-size (1-100 ms) models, reported apart
from that script's sub-millisecond ones.

Writes benchmarks/results/real_scale.json and the table between the markers in benchmarks/README.md.
Usage: python benchmarks/real_scale.py [--rounds 3] [--runs 30] [--models lite0,mnv2,...] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from _readme import update_section

from edgedistill.bench.local import run_local
from edgedistill.config.device import device_path, host_cpu, host_cpu_flags, load_device
from edgedistill.cost import model_cost
from edgedistill.data.images import ImageArray, Preprocess
from edgedistill.distill.trainer import predict
from edgedistill.export.formats import FORMATS, artifact_name
from edgedistill.export.parity import compare
from edgedistill.fileio import in_package
from edgedistill.latency.calibration import predictor_for
from edgedistill.models import build_model
from edgedistill.models.pretrained import LITE0_PREPROCESS, efficientnet_lite0_imagenet

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "real_scale.json"
MODELS = {
    "lite0": ("EfficientNet-Lite0 (teacher, ImageNet weights)", lambda: efficientnet_lite0_imagenet()),
    "mnv2": ("MobileNetV2 x1.0", lambda: build_model("mobilenet_v2", width=1.0, depth=1.0, in_channels=3,
                                                     num_classes=1000, input_hw=(224, 224))),
    "mnv2-035": ("MobileNetV2 x0.35", lambda: build_model("mobilenet_v2", width=0.35, depth=1.0, in_channels=3,
                                                          num_classes=1000, input_hw=(224, 224))),
    "mnv3l": ("MobileNetV3-Large", lambda: build_model("mobilenet_v3_large", width=1.0, depth=1.0, in_channels=3,
                                                       num_classes=1000, input_hw=(224, 224))),
    "mnv3s": ("MobileNetV3-Small", lambda: build_model("mobilenet_v3_small", width=1.0, depth=1.0, in_channels=3,
                                                       num_classes=1000, input_hw=(224, 224))),
}
# Published measurements on real boards (model, format, precision) -> (ms, what, source). Only what a reader can
# open; conditions differ from ours (threads, runtime version), so these are context, not a fit.
PUBLISHED = {
    ("lite0", "tflite", "fp32"): (49.0, "Raspberry Pi 4 CPU, TFLite (threads not stated)",
                                  "https://dev.to/tildalice/mobilenet-vs-efficientnet-lite-pi-4-first-model-38ms-gap-3l84"),
}


def photos() -> tuple[np.ndarray, np.ndarray]:
    folder = in_package("foolbox/data")
    paths = sorted(folder.glob("imagenet_*.jpg"))
    labels = np.array([int(p.stem.rsplit("_", 1)[1]) for p in paths])
    pre = Preprocess.from_spec(SimpleNamespace(mean=None, std=None, **LITE0_PREPROCESS))
    return ImageArray(paths, pre)[:], labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--reuse", action="store_true", help="recompute the predictions and the table from the "
                                                             "results file, without measuring again")
    args = parser.parse_args()
    if args.reuse:
        summary = json.loads(RESULTS.read_text())
        summary["host_predictor"] = host_predictor_check(summary["rows"])
        RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
        _update_readme(summary)
        return
    x, y = photos()
    device = load_device("raspberry-pi-4")
    predictor, _ = predictor_for(device, device_path("raspberry-pi-4"))
    rows, artifacts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.savez(folder / "photos.npz", x=x, y=y)
        for key in args.models.split(","):
            label, make = MODELS[key]
            model = make().eval()
            reference = predict(model, x)
            cost = model_cost(model, (3, 224, 224))
            for fmt in ("onnx", "tflite"):
                started = time.perf_counter()
                fp32 = folder / f"{key}-{artifact_name(fmt, 'fp32')}"
                FORMATS[fmt].export(model, (1, 3, 224, 224), fp32, opset=17, metadata={"model": label})
                for precision in ("fp32", "int8"):
                    path = FORMATS[fmt].variant(fp32, folder / f"{key}-{artifact_name(fmt, precision)}", precision,
                                                x, "minmax", [], {"model": label})
                    parity = compare(reference, FORMATS[fmt].outputs(path, x), y, 1e-4, fmt)
                    prediction = predictor.predict(cost, fmt, precision)
                    rows.append({"model": key, "label": label, "format": fmt, "precision": precision,
                                 "params": sum(p.numel() for p in model.parameters()), "macs": cost.macs,
                                 "bytes": path.stat().st_size, "max_abs_diff": parity.max_abs_diff,
                                 "top1_agreement": parity.top1_agreement, "accuracy_20_photos": parity.accuracy,
                                 "pi4_predicted_p90_ms": prediction.p90_ms, "pi4_prediction": prediction.source,
                                 "published": PUBLISHED.get((key, fmt, precision)), "rounds": []})
                    artifacts.append((rows[-1], path))
                print(f"{label} {fmt}: exported in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        # Interleaved: every artifact once per round, so drift in the machine's load hits them all alike.
        for r in range(args.rounds):
            for row, path in artifacts:
                result = run_local(path, folder / "photos.npz", threads=1, warmup_runs=5, warmup_s=0.2,
                                   runs=args.runs, min_time_s=0.5, timeout_s=900)
                row["rounds"].append({"p50_ms": result["latency_ms"]["p50"], "p90_ms": result["latency_ms"]["p90"],
                                      "peak_rss_mb": result["peak_rss_mb"]})
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    for row in rows:
        row["p50_ms"] = statistics.median(p["p50_ms"] for p in row["rounds"])
        row["p90_ms"] = statistics.median(p["p90_ms"] for p in row["rounds"])
        row["peak_rss_mb"] = max(p["peak_rss_mb"] for p in row["rounds"])
    fp32 = {(r["model"], r["format"]): r["p50_ms"] for r in rows if r["precision"] == "fp32"}
    for row in rows:
        row["speedup_vs_fp32"] = fp32[(row["model"], row["format"])] / row["p50_ms"]
    summary = {"benchmark": "real_scale", "date": time.strftime("%Y-%m-%d"), "threads": 1, "rounds": args.rounds,
               "runs_per_round": args.runs, "load_before": os.getloadavg(), "cpu": host_cpu(),
               "cpu_flags": host_cpu_flags(), "rows": rows,
               "host_predictor": host_predictor_check(rows)}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    _update_readme(summary)


def host_predictor_check(rows: list[dict]) -> dict | None:
    """The host predictor fitted on benchmarks/latency_predictor.py's calibration records (both sets, one thread),
    predicting each row's p50; per row the ratio, overall the share within 20 % and the median error."""
    from latency_predictor import host_fits

    from edgedistill.latency.predictor import LatencyPredictor

    hardware = load_device("host").hardware
    fitted = host_fits(hardware)
    if fitted is None:
        return None
    predictor = LatencyPredictor(hardware, fitted[0])
    errors = []
    for row in rows:
        cost = model_cost(MODELS[row["model"]][1]().eval(), (3, 224, 224))
        row["host_predicted_p50_ms"] = predictor.predict(cost, row["format"], row["precision"]).p50_ms
        errors.append(abs(row["host_predicted_p50_ms"] / row["p50_ms"] - 1))
    return {"calibrated_on": fitted[1], "predictions": len(errors),
            "within_20": float(np.mean(np.array(errors) <= 0.2)), "median_abs_error": statistics.median(errors),
            "measured_ms_range": [min(r["p50_ms"] for r in rows), max(r["p50_ms"] for r in rows)]}


def _update_readme(s: dict) -> None:
    int8 = [r for r in s["rows"] if r["precision"] == "int8"]
    best = max(int8, key=lambda r: r["speedup_vs_fp32"])
    worst = min(int8, key=lambda r: r["speedup_vs_fp32"])
    lines = [f"{s['date']}, {s['cpu']}, one pinned thread, batch 1; median over {s['rounds']} interleaved rounds of "
             f"at least {s['runs_per_round']} timed runs (load average before: {s['load_before'][0]:.2f}). Inputs: "
             "foolbox's 20 ImageNet photos at Lite0's preprocessing; students randomly initialised. int8: static, "
             f"min/max calibration on the 20 photos. CPU flags: {' '.join(s.get('cpu_flags', ['not recorded']))}. "
             "Pi 4 column: the raspberry-pi-4 profile's prediction, not a measurement (its roofline scaled to the "
             "latencies the profile cites, per arithmetic). Top-1 agreement is given for the teacher only: a student "
             "with random weights has nearly tied logits, where agreement says nothing (max abs diff does).", "",
             "| model | params | MACs | format | precision | size MiB | max abs diff | top-1 agreement | p50 ms | "
             "p90 ms | int8 speed-up | peak RSS MB | host predictor p50 ms | Pi 4 predicted p90 ms | "
             "published on a Pi 4 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        ms, what, source = r["published"] or (None, None, None)
        published = "—" if ms is None else f"{ms:g} ms ({what}; {source})"
        agreement = f"{r['top1_agreement']:.0%}" if r["model"] == "lite0" else "n/a (random weights)"
        lines.append(f"| {r['label']} | {r['params'] / 1e6:.2f} M | {r['macs'] / 1e6:.0f} M | {r['format']} | "
                     f"{r['precision']} | {r['bytes'] / 2**20:.2f} | {r['max_abs_diff']:.1e} | {agreement} | ")
        lines[-1] += (f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['speedup_vs_fp32']:.2f}× | "
                      f"{r['peak_rss_mb']:.0f} | {r.get('host_predicted_p50_ms', float('nan')):.2f} | "
                      f"{r['pi4_predicted_p90_ms']:.2f} | {published} |")
    lines += ["", f"int8 over fp32 (p50, same model and format): from {worst['speedup_vs_fp32']:.2f}× "
                  f"({worst['label']}, {worst['format']}) to {best['speedup_vs_fp32']:.2f}× ({best['label']}, "
                  f"{best['format']}); the goal was ≥ 1.6×."]
    check = s.get("host_predictor")
    if check:
        lines += ["", f"Host latency predictor (one fit on the micro and real-size calibration models of "
                      f"latency_predictor.json, measured {check['calibrated_on']} and after) on these "
                      f"real-size models ({check['measured_ms_range'][0]:.1f}–{check['measured_ms_range'][1]:.1f} ms): "
                      f"{check['within_20']:.0%} of {check['predictions']} predictions within ±20 %, median error "
                      f"{check['median_abs_error']:.0%}. These p50s are medians over rounds with the photos as "
                      "input, where the predictor's held-out check keeps each artifact's quietest round."]
    update_section("real_scale", "## Real scale (224×224)\n\n`python benchmarks/real_scale.py` (needs the `tflite` "
                   "and `vision` extras)", lines)


if __name__ == "__main__":
    main()
