"""Training with and without PyTorch's oneDNN (mkldnn) kernels: does it finish, is it repeatable, how fast.

Each cell trains a model (MODELS) on the digits training split for 2 epochs, in a fresh process, several
times: exit status (a heap corruption aborts the process), the sha256 of the final weights (the same seed
must give the same weights), and the training time. Why it exists: with oneDNN on, training the width-0.25
ResNet aborted with glibc heap errors at 1 thread and gave different weights on every run at 2, so
`distill.trainer.fit` turns oneDNN off for models with such convolutions (`trainer.onednn_safe`).
Writes benchmarks/results/onednn_training.json and the table in benchmarks/README.md.
Usage: python benchmarks/onednn_training.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _readme import update_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "onednn_training.json"

# The tests' tiny ResNet teacher (3x3 convolutions of 4 channels), ResNet widths with 8 channels and up, and the
# quickstart's MobileNetV2 student (thin, but its thin convolutions are 1x1, depthwise or the 1-channel stem).
MODELS = (("resnet", 0.25, 0.5), ("resnet", 0.5, 0.5), ("resnet", 1.0, 1.0), ("mobilenetv2", 0.125, 0.5))

# One training run, in its own process: the numbers a cell needs, as JSON on the last line.
TRAIN = """
import hashlib, io, json, sys, time, torch
import torch.nn.functional as F
from rich.console import Console
torch.set_num_threads(int(sys.argv[1]))
from edgedistill.config.pipeline import DigitsData, Training
from edgedistill.data import load_dataset
from edgedistill.distill.trainer import _fit, onednn, seed_everything
from edgedistill.models import build_model
data = load_dataset(DigitsData(kind="digits"), seed=0)
seed_everything(0)
model = build_model(sys.argv[5], width=float(sys.argv[3]), depth=float(sys.argv[4]), in_channels=1,
                    num_classes=10, input_hw=(8, 8))
start = time.perf_counter()
with onednn(sys.argv[2] == "on"):
    _fit(model, data.train, data.val, lambda x, logits, y, idx, epoch: F.cross_entropy(logits, y),
         Training(epochs=2, batch_size=64), seed=0, label="t", console=Console(file=io.StringIO()))
seconds = time.perf_counter() - start
digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()
print(json.dumps({"seconds": seconds, "weights_sha256": digest[:16]}))
"""


def one(threads: int, onednn: str, family: str, width: float, depth: float) -> dict:
    proc = subprocess.run([sys.executable, "-c", TRAIN, str(threads), onednn, str(width), str(depth), family],
                          capture_output=True, text=True, cwd=HERE.parent, timeout=900)
    if proc.returncode != 0:
        return {"exit_code": proc.returncode, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return {"exit_code": 0, **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cells = []
    for family, width, depth in MODELS:
        for threads in (1, 2):
            for onednn in ("on", "off"):
                runs = [one(threads, onednn, family, width, depth) for _ in range(args.repeats)]
                ok = [r for r in runs if r["exit_code"] == 0]
                cells.append({"model": f"{family} x{width} depth x{depth}", "threads": threads, "onednn": onednn,
                              "runs": runs, "finished": len(ok),
                              "distinct_weights": len({r["weights_sha256"] for r in ok}),
                              "median_s": statistics.median(r["seconds"] for r in ok) if ok else None})
                print(json.dumps({k: v for k, v in cells[-1].items() if k != "runs"}), flush=True)
    load = os.getloadavg()
    summary = {"benchmark": "onednn_training", "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
               "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "loadavg_1m_after": round(load[0], 2)},
               "cells": cells}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    rows = [f"{summary['date']}, {args.repeats} fresh processes per cell, 2 epochs on the digits training split "
            f"(seed 0), 2-core host (1-minute load average after the run: {load[0]:.2f}).", "",
            "| model | threads | oneDNN | finished | distinct weights | median training s |",
            "|---|---|---|---|---|---|"]
    for c in cells:
        median = "—" if c["median_s"] is None else f"{c['median_s']:.2f}"
        rows.append(f"| {c['model']} | {c['threads']} | {c['onednn']} | {c['finished']}/{len(c['runs'])} | "
                    f"{c['distinct_weights']} | {median} |")
    update_section("onednn", "## Training with and without oneDNN\n\n`python benchmarks/onednn_training.py`", rows)


if __name__ == "__main__":
    main()
