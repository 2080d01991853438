"""Distill with 1 and with 2 data-parallel processes (torchrun, DDP, gloo) on this machine.

Runs the quickstart pipeline's teacher once, then its distill stage with `--nproc 1` and `--nproc 2`
(`edgedistill run --resume` reuses the teacher), and reads samples per second (training examples per
second of distill-stage wall time, torchrun start-up included) and test accuracy from each run's manifest.
Writes benchmarks/results/distributed.json and the table in benchmarks/README.md.
Usage: python benchmarks/distributed.py [--epochs 40]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _readme import update_section

from edgedistill.resources import default_pipeline

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "distributed.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    spec = yaml.safe_load(default_pipeline().read_text())
    spec["distill"]["epochs"] = args.epochs
    spec["export"] = {"formats": ["onnx"], "precisions": ["fp32"]}
    spec["report"] = {"formats": ["json"]}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        path.write_text(yaml.safe_dump(spec))
        first = Path(tmp) / "base"
        for n in (1, 2):
            run_dir = Path(tmp) / f"n{n}"
            if first.exists():
                shutil.copytree(first, run_dir)  # the same teacher and student: only distill differs
            cmd = [sys.executable, "-m", "edgedistill", "run", str(path), "--out", str(run_dir), "--nproc", str(n)]
            if run_dir.exists():
                cmd.append("--resume")
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            if not first.exists():
                shutil.copytree(run_dir, first)
            stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
            distill = stages["distill"]
            examples = sum(entry["examples"] for entry in distill["metrics"]["history"])
            rows[n] = {"seconds": distill["seconds"], "examples": examples,
                       "samples_per_s": examples / distill["seconds"], "accuracy": distill["metrics"]["accuracy"],
                       "teacher_resumed": stages["teacher"]["resumed"]}
    summary = {"benchmark": "distributed", "date": time.strftime("%Y-%m-%d"), "epochs": args.epochs,
               "pipeline": "quickstart (distill epochs changed)", "runs": rows,
               "speedup": rows[2]["samples_per_s"] / rows[1]["samples_per_s"]}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    table = [f"Quickstart distill stage, {args.epochs} epochs, global batch 32, same teacher; {summary['date']}.", "",
             "| processes | distill s | samples/s | test accuracy |", "|---|---|---|---|"]
    for n, r in rows.items():
        table.append(f"| {n} | {r['seconds']:.1f} | {r['samples_per_s']:.0f} | {r['accuracy']:.2%} |")
    table.append(f"\n2 processes / 1: **{summary['speedup']:.2f}×** the samples per second.")
    update_section("distributed", "## Distributed distillation\n\n`python benchmarks/distributed.py`", table)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
