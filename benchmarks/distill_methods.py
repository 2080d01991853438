"""Compare distillation methods on digits: same teacher, same student, same epochs, several seeds.

Methods: scratch (hard labels only), KD, KD+features, KD+attention, KD+features+attention, and the full
schedule (all terms incl. the classifier term, warm-up / distill / fine-tune), plus KD through a teacher
assistant. Each method runs twice: on the whole training split, and with a quarter of it as the transfer
set (the same teacher, trained on everything; Hinton et al. 2015 trained on 3 % of the data with soft
targets), which is where a user with a trained teacher but little of its data stands. Also times a
distillation epoch with the teacher-output cache against the teacher run online,
on a setup where the teacher dominates the cost.

Writes benchmarks/results/distill_methods.json and the tables between the markers in benchmarks/README.md.
Usage: python benchmarks/distill_methods.py [--seeds 5] [--epochs 40] [--transfer-fraction 0.25]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _readme import update_section
from rich.console import Console

from edgedistill.config.pipeline import DigitsData, Distill, TrainedTeacher
from edgedistill.data import Split, load_dataset
from edgedistill.distill.augment import shift as shift_augment
from edgedistill.distill.distiller import assistant_widths, distill_model, width_ratio
from edgedistill.distill.trainer import accuracy, fit, predict, seed_everything
from edgedistill.models import build_model, count_params

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "distill_methods.json"
QUIET = Console(file=open(os.devnull, "w"))

BASE = {"batch_size": 32, "lr": 0.01, "temperature": 4.0, "alpha": 0.7}
FEATURES = {"mapping": "auto", "loss": "mse", "weight": 1.0}
ATTENTION = {"mapping": "auto", "weight": 1000.0}
METHODS = {
    "scratch": {"alpha": 0.0},
    "kd": {},
    "kd+features": {"features": FEATURES},
    "kd+attention": {"attention": ATTENTION},
    "kd+features+attention": {"features": FEATURES, "attention": ATTENTION},
    "full schedule": {"features": FEATURES, "attention": ATTENTION, "classifier": {"weight": 1.0},
                      "schedule": "standard"},
    "kd via assistant (TAKD)": {"progressive": {"mode": "on"}},
}


def student_factory(spec: str):
    family, width, depth = spec.split(":")
    return lambda: build_model(family, width=float(width), depth=float(depth), in_channels=1, num_classes=10,
                               input_hw=(8, 8))


def train_teacher(data, width: float, depth: float, epochs: int, shift: int = 0):
    seed_everything(0)
    teacher = build_model("resnet", width=width, depth=depth, in_channels=1, num_classes=10, input_hw=(8, 8))
    cfg = TrainedTeacher(kind="train", family="resnet", width=width, depth=depth, epochs=epochs)
    fit(teacher, data.train, data.val, lambda x, logits, y, idx, epoch: F.cross_entropy(logits, y), cfg, seed=0,
        label="teacher", console=QUIET, augment=shift_augment(shift) if shift else None)
    return teacher


def run_method(name, overrides, teacher, data, student_spec: str, seed, epochs) -> dict:
    cfg = Distill(**{**BASE, "epochs": epochs, **overrides})
    seed_everything(seed)
    student = student_factory(student_spec)()
    start = time.perf_counter()
    source = teacher
    if cfg.progressive.mode == "on":
        family, width, depth = student_spec.split(":")
        ratio = width_ratio(student, teacher, torch.from_numpy(data.train.x[:2]))
        (assistant_width,) = assistant_widths(float(width), ratio, 1)
        source = student_factory(f"{family}:{assistant_width}:{depth}")()
        distill_model(source, teacher, data, cfg, seed=seed, label="assistant", console=QUIET)
    distill_model(student, source, data, cfg, seed=seed, label=name, console=QUIET)
    return {"accuracy": accuracy(predict(student, data.test.x), data.test.y), "seconds": time.perf_counter() - start}


def transfer_subset(data, fraction: float, seed: int = 0):
    """The same data with `fraction` of each class's training examples (a fixed draw); validation and
    test splits unchanged."""
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(data.train.y == c))[:max(1, round(fraction * n))]
                                   for c, n in enumerate(np.bincount(data.train.y))]))
    return dataclasses.replace(data, train=Split(data.train.x[keep], data.train.y[keep]))


def compare_methods(teacher, data, student_spec: str, seeds: int, epochs: int) -> dict:
    out = {}
    for name, overrides in METHODS.items():
        runs = [run_method(name, overrides, teacher, data, student_spec, seed, epochs) for seed in range(seeds)]
        accs = [r["accuracy"] for r in runs]
        out[name] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                     "runs": accs, "median_seconds": statistics.median(r["seconds"] for r in runs)}
        print(f"{len(data.train):5d} train {name:28s} {out[name]['mean']:.4f} ± {out[name]['std']:.4f}",
              file=sys.stderr)
    return out


def cache_timing(data, epochs: int = 3) -> dict:
    """Seconds per distillation epoch: teacher online vs its outputs read from the cache (a warm hit)."""
    teacher = build_model("resnet", width=4.0, depth=2.0, in_channels=1, num_classes=10, input_hw=(8, 8))
    make_student = student_factory("mobilenetv2:0.125:0.5")
    out = {"teacher_params": count_params(teacher), "student_params": count_params(make_student())}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["EDGEDISTILL_CACHE"] = cache
        for label, cache_mode in (("online", "off"), ("cache miss (first run)", "auto"), ("cache hit", "auto")):
            cfg = Distill(**{**BASE, "epochs": epochs, "features": FEATURES, "cache": cache_mode})
            run = distill_model(make_student(), teacher, data, cfg, seed=0, label=label, console=QUIET)
            out[label] = {"seconds_per_epoch": run.seconds / epochs, "status": run.cache}
    out["hit_over_online"] = out["cache hit"]["seconds_per_epoch"] / out["online"]["seconds_per_epoch"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--student", default="mobilenetv2:0.25:0.5", help="family:width:depth")
    parser.add_argument("--teacher", default="2.0:1.0", help="ResNet width:depth")
    parser.add_argument("--teacher-epochs", type=int, default=60)
    parser.add_argument("--teacher-shift", type=int, default=1, help="random shifts while training the teacher")
    parser.add_argument("--transfer-fraction", type=float, default=0.25,
                        help="share of the training split the second comparison distills on")
    parser.add_argument("--reuse-whole-split", action="store_true",
                        help="take the whole-split comparison from the results file instead of running it again "
                             "(the runs are deterministic: same settings, same numbers); only with the same settings")
    args = parser.parse_args()
    data = load_dataset(DigitsData(kind="digits"), seed=0)
    t_width, t_depth = map(float, args.teacher.split(":"))
    teacher = train_teacher(data, t_width, t_depth, args.teacher_epochs, args.teacher_shift)
    make_student = student_factory(args.student)
    summary = {"benchmark": "distill_methods", "date": time.strftime("%Y-%m-%d"), "seeds": args.seeds,
               "epochs": args.epochs, "student": args.student, "student_params": count_params(make_student()),
               "teacher": f"resnet:{args.teacher}", "teacher_epochs": args.teacher_epochs,
               "teacher_shift": args.teacher_shift, "teacher_params": count_params(teacher),
               "teacher_accuracy": accuracy(predict(teacher, data.test.x), data.test.y),
               "train_examples": len(data.train)}
    if args.reuse_whole_split:
        previous = json.loads(RESULTS.read_text())
        settings = ("seeds", "epochs", "student", "teacher", "teacher_epochs", "teacher_shift", "teacher_accuracy")
        changed = [k for k in settings if previous.get(k) != summary[k]]
        if changed:
            sys.exit(f"--reuse-whole-split: {RESULTS} was run with other settings ({', '.join(changed)})")
        summary["methods"], summary["date_whole_split"] = previous["methods"], previous["date"]
        summary["cache"] = previous["cache"]
    else:
        summary["methods"] = compare_methods(teacher, data, args.student, args.seeds, args.epochs)
        summary["cache"] = cache_timing(data)
    small = transfer_subset(data, args.transfer_fraction)
    summary["transfer_fraction"], summary["transfer_examples"] = args.transfer_fraction, len(small.train)
    summary["methods_small_transfer_set"] = compare_methods(teacher, small, args.student, args.seeds, args.epochs)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    _update_readme(summary)


def _method_rows(methods: dict) -> list[str]:
    scratch = methods["scratch"]["mean"]
    rows = ["| method | test accuracy (mean ± std) | vs scratch | median s per run |", "|---|---|---|---|"]
    for name, m in methods.items():
        rows.append(f"| {name} | {m['mean']:.2%} ± {m['std']:.2%} | {(m['mean'] - scratch) * 100:+.2f} pt | "
                    f"{m['median_seconds']:.1f} |")
    return rows


def _update_readme(s: dict) -> None:
    width, depth = s["teacher"].split(":")[1:]
    rows = [f"Teacher ResNet {width}×{depth}, {s['teacher_params']:,} params, trained {s['teacher_epochs']} epochs "
            f"with random shifts of up to {s['teacher_shift']} px, test accuracy {s['teacher_accuracy']:.2%}. "
            f"Student {s['student']} ({s['student_params']:,} params, "
            f"{s['student_params'] / s['teacher_params']:.2%} of the teacher), {s['epochs']} epochs, "
            f"seeds 0–{s['seeds'] - 1}, "
            f"test split of 360 digits; {s['date']}.", "",
            f"Distilled on the whole training split ({s['train_examples']:,} digits):", "",
            *_method_rows(s["methods"]), "",
            f"Distilled on {s['transfer_fraction']:.0%} of the training split ({s['transfer_examples']:,} digits, "
            "the same share of each class); the teacher is the same one, trained on the whole split:", "",
            *_method_rows(s["methods_small_transfer_set"])]
    c = s["cache"]
    rows += ["", f"Teacher-output cache (teacher ResNet 4.0×2.0, {c['teacher_params']:,} params; student "
             f"{c['student_params']:,} params; KD + features; seconds per epoch):", "",
             "| teacher outputs | s / epoch |", "|---|---|"]
    rows += [f"| {k} | {c[k]['seconds_per_epoch']:.2f} |" for k in ("online", "cache miss (first run)", "cache hit")]
    rows.append(f"\nCache hit / online: **{c['hit_over_online']:.2f}×** the time per epoch.")
    update_section("distill_methods", "## Distillation methods\n\n`python benchmarks/distill_methods.py --seeds 5`",
                   rows)

if __name__ == "__main__":
    main()
