"""Training throughput against this CPU's limit: achieved multiply-accumulates per second of a training step
(forward, backward, optimizer) of the students and teachers the pipelines use, over the measured peak of one
large matrix multiply and one large convolution in the same torch build, on the same threads.

A training step costs about three forward passes of multiply-accumulates (the forward, and the backward's
gradients for the inputs and for the weights); the forward's count is edgedistill.cost.model_cost's. The peak
is the best of a few timed repeats; each step's time is the median of timed steps after warm-up steps.

Writes benchmarks/results/training_throughput.json (each model as it finishes) and the table between the markers
in benchmarks/README.md. Usage: python benchmarks/training_throughput.py [--batches 256,1024] [--steps 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _readme import update_section

from edgedistill.config.device import host_cpu_flags
from edgedistill.cost import model_cost
from edgedistill.distill.trainer import make_optimizer, onednn, onednn_safe, training_layout
from edgedistill.models import build_model, count_params

RESULTS = Path(__file__).resolve().parent / "results" / "training_throughput.json"
# (label, family, width, depth, input side): the Fashion-MNIST pipeline's teacher and students, the quickstart's.
MODELS = [
    ("Fashion teacher: ResNet 1.0x1.0", "resnet", 1.0, 1.0, 28),
    ("Fashion student: MobileNetV2 0.25x0.5", "mobilenetv2", 0.25, 0.5, 28),
    ("Fashion student: MobileNetV2 0.125x0.5", "mobilenetv2", 0.125, 0.5, 28),
    ("quickstart teacher: ResNet 1.0x1.0 (digits)", "resnet", 1.0, 1.0, 8),
    ("quickstart student: MobileNetV2 0.125x0.5 (digits)", "mobilenetv2", 0.125, 0.5, 8),
]


def best_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up: allocations, kernel choice
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peaks() -> dict:
    """GMAC/s of a 2048^3 fp32 matrix multiply and of a 3x3 convolution (256 to 256 channels, 28x28, batch 32)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    gemm = 2048 ** 3 / best_seconds(lambda: a @ b) / 1e9
    x, w = torch.randn(32, 256, 28, 28), torch.randn(256, 256, 3, 3)
    conv_macs = 32 * 256 * 256 * 9 * 28 * 28
    conv = conv_macs / best_seconds(lambda: F.conv2d(x, w, padding=1)) / 1e9
    return {"gemm_gmacs": gemm, "conv_gmacs": conv}


def training_step_seconds(model: torch.nn.Module, side: int, batch: int, steps: int,
                          layout: torch.memory_format | None = None) -> float:
    """Median seconds of one training step (cross-entropy on random data), as the trainer runs it (AdamW, oneDNN
    off for thin convolutions, trainer.onednn_safe; the layout of trainer.training_layout, or `layout`)."""
    layout = layout or training_layout(model)
    model.train().to(memory_format=layout)
    optimizer = make_optimizer(model.parameters(), argparse.Namespace(optimizer="adam", lr=1e-3, weight_decay=1e-4))
    x, y = torch.randn(batch, 1, side, side).contiguous(memory_format=layout), torch.randint(0, 10, (batch,))
    times = []
    with onednn(onednn_safe(model)):
        for i in range(steps + 3):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            if i >= 3:  # the first steps choose kernels and allocate
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="256,1024", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    summary = {"benchmark": "training_throughput", "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "cpu_flags": host_cpu_flags(),
               "load_average_before": os.getloadavg(),
               "batches": [int(b) for b in args.batches.split(",")], "peak": peaks(), "models": []}
    peak = max(summary["peak"].values())
    for (label, family, width, depth, side), batch in itertools.product(MODELS, summary["batches"]):
        model = build_model(family, width=width, depth=depth, in_channels=1, num_classes=10, input_hw=(side, side))
        macs = model_cost(model, (1, side, side)).macs
        seconds = training_step_seconds(model, side, batch, args.steps)
        nchw = training_step_seconds(model, side, batch, args.steps, torch.contiguous_format)
        achieved = 3 * macs * batch / seconds / 1e9
        summary["models"].append({"model": label, "batch": batch, "params": count_params(model),
                                  "forward_macs": macs, "step_s": seconds, "examples_per_s": batch / seconds,
                                  "achieved_gmacs": achieved, "of_peak": achieved / peak,
                                  "onednn": onednn_safe(model), "layout": str(training_layout(model)),
                                  "nchw_step_s": nchw})
        summary["load_average_after"] = os.getloadavg()
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"{label} at batch {batch}: {achieved:.2f} GMAC/s, {achieved / peak:.1%} of peak", flush=True)
    _update_readme(summary)


def _update_readme(s: dict) -> None:
    p = s["peak"]
    rows = [f"Peak on this host ({s['threads']} threads, torch {s['torch']}): fp32 matrix multiply 2048³ "
            f"{p['gemm_gmacs']:.1f} GMAC/s, 3×3 convolution 256→256 at 28×28 (batch 32) {p['conv_gmacs']:.1f} GMAC/s. "
            "Training steps (AdamW, cross-entropy), three forward passes of MACs each; "
            f"{s['date']}, load average {s['load_average_before'][0]:.2f} before, "
            f"{s['load_average_after'][0]:.2f} after; CPU flags {' '.join(s['cpu_flags'])}.", "",
            "Steps in the trainer's layout (channels-last for convolutional models); the last column is the same "
            "step in the default NCHW layout, as the trainer ran before.", "",
            "| model | params | forward MACs | batch | step s | examples/s | achieved GMAC/s | of peak | NCHW / it |",
            "|---|---|---|---|---|---|---|---|---|"]
    rows += [f"| {m['model']} | {m['params']:,} | {m['forward_macs'] / 1e6:.2f} M | {m['batch']} | {m['step_s']:.3f} | "
             f"{m['examples_per_s']:,.0f} | {m['achieved_gmacs']:.2f} | {m['of_peak']:.1%} | "
             f"{m['nchw_step_s'] / m['step_s']:.2f}× |" for m in s["models"]]
    update_section("training_throughput", "## Training throughput against the CPU's peak\n\n"
                   "`python benchmarks/training_throughput.py`", rows)


if __name__ == "__main__":
    main()
