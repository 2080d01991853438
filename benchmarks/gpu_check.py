"""The GPU path, checked on a GPU: one prepared script for a machine lent with one (it needs nothing from outside).

1. Teacher training and distillation of the quickstart (digits; ResNet teacher, MobileNetV2-style student) on
   `cuda` in fp32 and bf16 and on the CPU: examples per second and test accuracy of each.
2. The whole quickstart pipeline (shortened) with `train.device: cuda`, started by torchrun with one process.
   The data-parallel path (DDP, nccl) starts at two processes, which one GPU cannot host under nccl; on a
   machine with two GPUs, run the same with `--nproc_per_node=2`.
3. A resume round trip: two epochs on the GPU, stopped; the next two on the CPU from that training state; then
   two more on the GPU from the CPU's: the epochs continue, nothing is retrained.
4. The shipped benchmark runner with onnxruntime's CUDA execution provider, when onnxruntime-gpu is installed
   (the Jetson profiles ask for TensorRT, then CUDA, then the CPU): the providers that actually ran.

Writes benchmarks/results/gpu_check.json and the table in benchmarks/README.md. `--dry-run` runs every step on
the CPU (the GPU steps then on the CPU too) to check the script itself, and writes nothing.
Usage: python benchmarks/gpu_check.py [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console

from edgedistill.config.pipeline import DigitsData, Distill, Training
from edgedistill.data import load_dataset
from edgedistill.distill.compute import Compute, resolve
from edgedistill.distill.distiller import distill_model
from edgedistill.distill.trainer import accuracy, fit, predict
from edgedistill.models import build_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "gpu_check.json"
QUIET = Console(quiet=True)


def models():
    torch.manual_seed(0)
    teacher = build_model("resnet", width=1.0, depth=1.0, in_channels=1, num_classes=10, input_hw=(8, 8))
    student = build_model("mobilenetv2", width=0.125, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8))
    return teacher, student


def train_and_distill(compute: Compute, data, epochs: int) -> dict:
    """Teacher training, then distillation, on `compute`: examples per second of each and test accuracy."""
    teacher, student = models()
    start = time.perf_counter()
    fit(teacher, data.train, data.val, lambda x, logits, y, idx, e: F.cross_entropy(logits, y),
        Training(epochs=epochs, batch_size=64, lr=0.003), seed=0, label="teacher", console=QUIET, compute=compute)
    teacher_s = time.perf_counter() - start
    start = time.perf_counter()
    distill_model(student, teacher, data, Distill(epochs=epochs, batch_size=32, lr=0.01, cache="off"), seed=0,
                  label="distill", console=QUIET, compute=compute)
    distill_s = time.perf_counter() - start
    seen = epochs * len(data.train)
    return {"device": str(compute.device), "precision": compute.precision,
            "teacher_examples_per_s": seen / teacher_s, "distill_examples_per_s": seen / distill_s,
            "teacher_accuracy": accuracy(predict(teacher, data.test.x), data.test.y),
            "student_accuracy": accuracy(predict(student, data.test.x), data.test.y)}


def resume_round_trip(gpu: Compute, data, workdir: Path) -> dict:
    """GPU -> CPU -> GPU, two epochs each, through one training-state file (each call asks for two more
    epochs than the state holds, as a user extending a run would)."""
    cpu = Compute(torch.device("cpu"))
    _, student = models()
    state = workdir / "round-trip.pt"
    resumed = []
    for epochs, compute in ((2, gpu), (4, cpu), (6, gpu)):
        result = fit(student, data.train, data.val, lambda x, logits, y, idx, e: F.cross_entropy(logits, y),
                     Training(epochs=epochs, batch_size=64, lr=0.01), seed=0, label="round trip", console=QUIET,
                     compute=compute, state_path=state)
        resumed.append({"device": str(compute.device), "resumed_from_epoch": result.resumed_from_epoch,
                        "epochs_done": len(result.history)})
    return {"steps": resumed, "ok": [r["resumed_from_epoch"] for r in resumed] == [0, 2, 4]}


def pipeline_under_torchrun(device: str, workdir: Path) -> dict:
    """The shortened quickstart under torchrun, one process, training on `device`."""
    import yaml

    spec = yaml.safe_load((HERE.parent / "pipelines" / "quickstart.yaml").read_text())
    spec["teacher"]["epochs"], spec["distill"]["epochs"], spec["distill"]["baseline"] = 2, 2, "off"
    spec["export"]["formats"], spec["export"]["precisions"] = ["onnx"], ["fp32"]
    spec["bench"]["emulate"], spec["train"] = "off", {"device": device}
    (workdir / "p.yaml").write_text(yaml.safe_dump(spec))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                           "-m", "edgedistill", "run", str(workdir / "p.yaml"), "--out", str(workdir / "ddp")],
                          capture_output=True, text=True, timeout=900)
    manifest = workdir / "ddp" / "manifest.json"
    distill = json.loads(manifest.read_text())["stages"]["distill"] if manifest.is_file() else {}
    return {"returncode": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
            "distill_status": distill.get("status"), "compute": (distill.get("metrics") or {}).get("compute"),
            "stderr_tail": proc.stderr[-500:] if proc.returncode else ""}


def runner_cuda(workdir: Path) -> dict:
    """The shipped runner asked for CUDA, then the CPU: the providers that ran."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"status": "skipped: onnxruntime not installed"}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"status": f"skipped: this onnxruntime ({ort.__version__}) has no CUDA provider "
                          "(install onnxruntime-gpu)"}
    from edgedistill.bench.local import run_local
    from edgedistill.export.onnx import torch_to_onnx

    _, student = models()
    path = torch_to_onnx(student.eval(), (1, 1, 8, 8), workdir / "m.onnx", opset=17, metadata={})
    result = run_local(path, None, threads=1, warmup_runs=10, warmup_s=0, runs=200, min_time_s=0, timeout_s=300,
                       providers=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    return {"status": "ok", "providers": result["runtime"]["providers"], "p50_ms": result["latency_ms"]["p50"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU; writes nothing")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    gpu_device = "cpu" if args.dry_run else "cuda"
    gpu = resolve(gpu_device)
    data = load_dataset(DigitsData(kind="digits"), seed=0)
    out = {"benchmark": "gpu_check", "date": time.strftime("%Y-%m-%d"), "dry_run": args.dry_run,
           "torch": torch.__version__, "cuda": torch.version.cuda, "gpu": gpu.describe(), "epochs": args.epochs}
    runs = [train_and_distill(Compute(torch.device("cpu")), data, args.epochs)]
    for precision in ("fp32", "bf16"):
        runs.append(train_and_distill(Compute(gpu.device, precision), data, args.epochs))
        print(json.dumps(runs[-1]))
    out["training"] = runs
    with tempfile.TemporaryDirectory() as work:
        out["resume_round_trip"] = resume_round_trip(gpu, data, Path(work))
        out["pipeline_under_torchrun"] = pipeline_under_torchrun(gpu_device, Path(work))
        out["runner_cuda"] = runner_cuda(Path(work))
    print(json.dumps({k: out[k] for k in ("resume_round_trip", "pipeline_under_torchrun", "runner_cuda")}, indent=1))
    if args.dry_run:
        return
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    from _readme import update_section

    lines = [f"{out['date']}, {out['gpu'].get('gpu')} (CUDA {out['cuda']}, driver {out['gpu'].get('driver')}), "
             f"torch {out['torch']}; {args.epochs} epochs of the quickstart's teacher and distillation.", "",
             "| device | precision | teacher examples/s | distill examples/s | teacher acc. | student acc. |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['precision']} | {r['teacher_examples_per_s']:.0f} | "
              f"{r['distill_examples_per_s']:.0f} | {r['teacher_accuracy']:.2%} | {r['student_accuracy']:.2%} |"
              for r in runs]
    lines += ["", f"Resume GPU → CPU → GPU: {'ok' if out['resume_round_trip']['ok'] else 'FAILED'}; "
              f"the pipeline on the GPU under torchrun: distill {out['pipeline_under_torchrun']['distill_status']}; "
              f"runner with the CUDA "
              f"provider: {out['runner_cuda'].get('providers') or out['runner_cuda']['status']}."]
    update_section("gpu_check", "## GPU check\n\n`python benchmarks/gpu_check.py` on a machine with a GPU.", lines)


if __name__ == "__main__":
    os.environ.setdefault("EDGEDISTILL_CACHE", tempfile.mkdtemp(prefix="gpu-check-cache-"))
    main()
