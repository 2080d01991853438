"""Whose integer kernels judge an int8 artifact: the quickstart student's ONNX int8 (static QDQ, per-channel,
min-max on 128 training samples) with 8-bit and with 7-bit weights (onnxruntime's reduce_range), its accuracy
on the test and validation splits under three sets of kernels:

- this host's CPU as it is (its flags are recorded: AVX-512 VNNI or not);
- an x86 CPU with AVX2 but no VNNI, emulated by qemu-x86_64 (-cpu Haswell-v4), running the same Python and
  onnxruntime: its u8 x s8 kernels add products in pairs into 16 bits, which saturate with 8-bit weights;
- the Raspberry Pi 4's Cortex-A72, emulated by qemu-aarch64 in the emulated ARM userland (bench/emulated.py).

Each artifact is run by the benchmark runner (edgedistill/bench/runner.py), which reports accuracy on the .npz
it is given. Runs the quickstart pipeline into a temporary folder unless --run names a finished one.
Writes benchmarks/results/int8_kernels.json (each cell as it finishes) and a table in benchmarks/README.md.
Usage: python benchmarks/int8_kernels.py [--run RUN_DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _readme import update_section

from edgedistill.bench.emulated import run_emulated
from edgedistill.bench.local import RUNNER, last_json_line
from edgedistill.config.device import host_cpu, host_cpu_flags
from edgedistill.config.pipeline import load_pipeline
from edgedistill.data import load_dataset, stratified_indices
from edgedistill.distill.trainer import accuracy, predict
from edgedistill.export.formats import FORMATS
from edgedistill.models.io import ArchInfo, load_weights
from edgedistill.quantize.onnx import quantize_onnx

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "int8_kernels.json"
QUICKSTART = HERE.parent / "pipelines" / "quickstart.yaml"
X86_NO_VNNI = "Haswell-v4"  # qemu's Haswell: AVX2 and FMA, no AVX-512, no VNNI


def runner_accuracy(model: Path, data: Path, kernels: str) -> float:
    """Accuracy of `model` on `data` as the benchmark runner measures it, on `kernels`."""
    runner_args = ["--threads", "1", "--warmup-runs", "0", "--warmup-s", "0", "--runs", "1", "--min-time-s", "0"]
    if kernels == "cortex-a72":
        return run_emulated(model, data, cpu="cortex-a72", runner_args=runner_args, timeout_s=900)["accuracy"]
    prefix = [] if kernels == "host" else [shutil.which("qemu-x86_64-static") or "qemu-x86_64-static", "-cpu",
                                            X86_NO_VNNI]  # kernels == "x86"
    cmd = [*prefix, sys.executable, str(RUNNER), "--model", str(model), "--data", str(data), *runner_args]
    proc = subprocess.run(cmd, capture_output=True, timeout=1800, env={**os.environ, "OMP_NUM_THREADS": "1"})
    answer = last_json_line(proc.stdout)
    if answer is None:
        raise RuntimeError(f"runner on {kernels} exited {proc.returncode}: {proc.stderr.decode()[-400:]}")
    return answer["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished quickstart run folder (default: run one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        run_dir = args.run
        if run_dir is None:
            run_dir = work / "run"
            subprocess.run([sys.executable, "-m", "edgedistill", "run", str(QUICKSTART), "--out", str(run_dir)],
                           check=True, stdout=subprocess.DEVNULL)
        spec = load_pipeline(run_dir / "pipeline.resolved.yaml")
        data = load_dataset(spec.data, spec.seed)
        arch = ArchInfo.load(run_dir / "student" / "arch.json")
        model = arch.build()
        load_weights(model, run_dir / "distill" / "best.safetensors")  # the student the run shipped
        torch_acc = {"test": accuracy(predict(model, data.test.x), data.test.y),
                     "val": accuracy(predict(model, data.val.x), data.val.y)}
        fp32 = FORMATS["onnx"].export(model, (1, *data.input_shape), work / "fp32.onnx", opset=17, metadata={})
        calib = data.train.x[stratified_indices(data.train.y, 128, spec.seed)]
        splits = {}
        for split in ("test", "val"):
            part = getattr(data, split)
            splits[split] = work / f"{split}.npz"
            np.savez(splits[split], x=part.x, y=part.y)
        models = {"fp32": fp32}
        for name, narrow in (("int8 (8-bit weights)", False), ("int8 (7-bit weights, reduce_range)", True)):
            models[name] = quantize_onnx(fp32, work / f"{'7' if narrow else '8'}bit.onnx", "int8",
                                         calibration_x=calib, reduce_range=narrow)
        flags = host_cpu_flags()
        record = {"benchmark": "int8_kernels", "date": time.strftime("%Y-%m-%d"), "host_cpu": host_cpu(),
                  "host_flags": sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f),
                  "load_average": os.getloadavg(), "pipeline": "quickstart (digits)", "student": arch.family,
                  "pytorch_accuracy": torch_acc, "cells": []}
        kernel_sets = {"host": "this host", "x86": f"x86 {X86_NO_VNNI}, no VNNI (qemu)",
                       "cortex-a72": "Cortex-A72 (qemu)"}
        for kernels, label in kernel_sets.items():
            for name, path in models.items():
                cell = {"kernels": label, "model": name}
                for split, npz in splits.items():
                    started = time.perf_counter()
                    cell[f"{split}_accuracy"] = runner_accuracy(path, npz, kernels)
                    cell[f"{split}_seconds"] = round(time.perf_counter() - started, 1)
                record["cells"].append(cell)
                RESULTS.write_text(json.dumps(record, indent=2) + "\n")  # each cell kept as it finishes
                print(json.dumps(cell), flush=True)
    rows = ["| kernels | model | test accuracy | validation accuracy |", "|---|---|---|---|"]
    rows += [f"| {c['kernels']} | {c['model']} | {c['test_accuracy']:.2%} | {c['val_accuracy']:.2%} |"
             for c in record["cells"]]
    header = (f"{record['date']}, {record['host_cpu']} ({', '.join(record['host_flags'])}), load average "
              f"{record['load_average'][0]:.2f}. The quickstart student (PyTorch: test {torch_acc['test']:.2%}, "
              f"validation {torch_acc['val']:.2%}); each ONNX file run by the benchmark runner on the kernels named.")
    update_section("int8_kernels", "## Whose kernels judge int8", [header, "", *rows])


if __name__ == "__main__":
    main()
