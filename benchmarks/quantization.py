"""Every export format and precision of the distilled digits student (and, for contrast, its teacher):
size, accuracy, top-1 agreement with PyTorch, and one-thread latency on this host.

Runs the quickstart pipeline into a temporary folder (or uses --run DIR), then exports and times each
artifact with the same runner the bench stage uses, pinned to one core.
Writes benchmarks/results/quantization.json and the table between the markers in benchmarks/README.md.
Usage: python benchmarks/quantization.py [--run RUN_DIR] [--runs 2000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _readme import update_section

from edgedistill.bench.local import run_local
from edgedistill.config.pipeline import load_pipeline
from edgedistill.cost import macs_by_kind
from edgedistill.data import load_dataset
from edgedistill.distill.trainer import accuracy, predict
from edgedistill.export.formats import FORMATS, PRECISIONS, artifact_name
from edgedistill.export.parity import compare
from edgedistill.models.io import ArchInfo, load_weights

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "quantization.json"


def op_count(fmt: str, path: Path) -> int:
    """Nodes in the graph: each one costs a fixed dispatch overhead whatever its size."""
    if fmt == "onnx":
        import onnx

        return len(onnx.load(str(path)).graph.node)
    from ai_edge_litert.tools import flatbuffer_utils

    return len(flatbuffer_utils.read_model(str(path)).subgraphs[0].operators)


def measure(label, model, data, calib_x, folder: Path, runs: int) -> list[dict]:
    reference = predict(model, data.test.x)
    torch_acc = accuracy(reference, data.test.y)
    test_npz = folder / "test.npz"
    np.savez(test_npz, x=data.test.x, y=data.test.y)
    rows = []
    for fmt in FORMATS:
        conv = FORMATS[fmt]
        fp32 = folder / f"{label}-{artifact_name(fmt, 'fp32')}"
        conv.export(model, (1, *data.input_shape), fp32, opset=17, metadata={"pipeline": label, "precision": "fp32"})
        for precision in PRECISIONS:
            path = conv.variant(fp32, folder / f"{label}-{artifact_name(fmt, precision)}", precision, calib_x,
                                "minmax", [], {"pipeline": label})
            parity = compare(reference, FORMATS[fmt].outputs(path, data.test.x), data.test.y, 1e-4, fmt)
            bench = run_local(path, test_npz, threads=1, warmup_runs=50, warmup_s=0.5, runs=runs, min_time_s=1.0,
                              timeout_s=600)
            rows.append({"model": label, "format": fmt, "precision": precision, "bytes": path.stat().st_size,
                         "macs": sum(macs_by_kind(model, data.input_shape).values()), "ops": op_count(fmt, path),
                         "accuracy": parity.accuracy, "torch_accuracy": torch_acc, "drop": torch_acc - parity.accuracy,
                         "top1_agreement": parity.top1_agreement, "max_abs_diff": parity.max_abs_diff,
                         "p50_ms": bench["latency_ms"]["p50"], "p90_ms": bench["latency_ms"]["p90"]})
            print(f"{label:8s} {fmt:6s} {precision:12s} {rows[-1]['p50_ms']:.4f} ms  acc {parity.accuracy:.4f}  "
                  f"agree {parity.top1_agreement:.4f}", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished quickstart run folder (default: run it now)")
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run
        if run_dir is None:
            run_dir = Path(tmp) / "run"
            subprocess.run([sys.executable, "-m", "edgedistill", "run", "--out", str(run_dir)], check=True,
                           capture_output=True)
        spec = load_pipeline(run_dir / "pipeline.resolved.yaml")
        data = load_dataset(spec.data, spec.seed)
        calib_x = data.train.x[:spec.export.calibration.samples]
        rows = []
        for label, arch, weights in (("student", "student/arch.json", "distill/best.safetensors"),
                                     ("teacher", "teacher/arch.json", "teacher/model.safetensors")):
            model = ArchInfo.load(run_dir / arch).build()
            load_weights(model, run_dir / weights)
            rows += measure(label, model.eval(), data, calib_x, Path(tmp), args.runs)
    summary = {"benchmark": "quantization", "date": time.strftime("%Y-%m-%d"), "threads": 1, "runs": args.runs,
               "rows": rows}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    _update_readme(summary)


def _update_readme(s: dict) -> None:
    lines = [f"One thread, pinned to one core; at least {s['runs']} timed runs after warm-up, batch 1; "
             f"{s['date']}. Ratio: p50 of this artifact over the fp32 artifact of the same format and model.", "",
             "| model | MACs | format | precision | graph ops | size KiB | accuracy | drop vs PyTorch | "
             "top-1 agreement | "
             "p50 ms | p90 ms | vs fp32 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {(r["model"], r["format"]): r["p50_ms"] for r in s["rows"] if r["precision"] == "fp32"}
    for r in s["rows"]:
        lines.append(f"| {r['model']} | {r['macs']:,} | {r['format']} | {r['precision']} | {r['ops']} | "
                     f"{r['bytes'] / 1024:.1f} | {r['accuracy']:.2%} | "
                     f"{r['drop'] * 100:+.2f} pt | {r['top1_agreement']:.2%} | {r['p50_ms']:.4f} | {r['p90_ms']:.4f} | "
                     f"{r['p50_ms'] / base[(r['model'], r['format'])]:.2f}× |")
    update_section("quantization", "## Quantization\n\n`python benchmarks/quantization.py` (needs the `tflite` extra)",
                   lines)

if __name__ == "__main__":
    main()
