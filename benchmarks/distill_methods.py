"""Compare distillation methods on digits or Fashion-MNIST: same teacher, same student, same epochs, seeds.

Methods: scratch (hard labels only), KD, KD+features, KD+attention, KD+features+attention, and the full
schedule (all terms incl. the classifier term, warm-up / distill / fine-tune), plus KD through a teacher
assistant. Each method runs twice: on the whole training split, and with a quarter of it as the transfer
set (the same teacher, trained on everything; Hinton et al. 2015 trained on 3 % of the data with soft
targets), which is where a user with a trained teacher but little of its data stands. Also times a
distillation epoch with the teacher-output cache against the teacher run online,
on a setup where the teacher dominates the cost.

`--data fashion-mnist` (Debian's official files: apt-get install dataset-fashion-mnist) compares on the whole
60,000-image training split and the official 10,000-image test split instead, with the methods of FASHION_METHODS
(decoupled KD and consistent teaching among them) and a longer schedule for the two best; it writes
benchmarks/results/distill_methods_fashion.json and its own table.

Writes benchmarks/results/distill_methods.json and the tables between the markers in benchmarks/README.md.
Usage: python benchmarks/distill_methods.py [--seeds 5] [--epochs 40] [--transfer-fraction 0.25]
       python benchmarks/distill_methods.py --data fashion-mnist --seeds 3 --epochs 10 --teacher 1.0:1.0
       python benchmarks/distill_methods.py --data fashion-mnist --convergence --epochs 20 --students S \\
           --teacher-checkpoint teacher.pt   (resumable: rerun the same command to continue)
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
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

from edgedistill.config.device import host_cpu_flags
from edgedistill.config.pipeline import Augment, DigitsData, Distill, IdxData, TrainedTeacher
from edgedistill.data import Split, load_dataset
from edgedistill.distill import augment as augmentation
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


# Fashion-MNIST: the list. DKD per its authors (alpha 0 here: labels weigh 1, plain KD off); consistent
# teaching with crops and flips, and with mixup too (then on the teacher alone, alpha 1).
FASHION_METHODS = {
    "scratch": {"alpha": 0.0},
    "kd": {},
    "dkd": {"alpha": 0.0, "dkd": {"alpha": 1.0, "beta": 8.0, "warmup_epochs": 2}},
    "consistent (crop, flip)": {"consistent": {"crop_area": 0.5, "flip": True, "shift": 2}},
    "consistent (crop, flip, mixup)": {"alpha": 1.0, "consistent": {"crop_area": 0.5, "flip": True, "shift": 2,
                                                                    "mixup": 0.4}},
    "kd+features": {"features": FEATURES},
    "full schedule": {"features": FEATURES, "attention": ATTENTION, "classifier": {"weight": 1.0},
                      "schedule": "standard"},
}
TEACHER_RECIPE = {"flip": False, "batch_size": 64, "lr": 3e-3}  # TrainedTeacher's defaults
# At convergence every method trains the same way (same epochs, optimizer, LR schedule, views): Adam, a linear
# warm-up over a tenth of the epochs then cosine, random shifts (2 px) and left-right flips, the student shown one of
# 8 seeded views of each image a step, the teacher's outputs on those views computed once and cached (the features
# and the schedule's attention hook the teacher's layers, so there the teacher runs online on fresh views). Each
# method as its authors set it: KD as mdistiller's KD (T 4, 0.9 on the teacher, 0.1 on the labels); DKD as
# mdistiller's CIFAR-100 configs (alpha 1, beta 8, T 4, labels 1, the term ramped over 20 of 240 epochs: a twelfth);
# function matching as Beyer et al. 2022 (arXiv:2106.05237: the teacher alone on the student's very view, T 1),
# within the 8 cached views, and as their configs run it, with mixup (big_vision's
# configs/proj/distill/bigsweep_flowers_pet.py: `mixup = dict(p=1.0, n=2)`, a uniform blend of two images): a mixed
# image is no cached view, so there the teacher runs online on every batch.
KD_PUBLISHED = {"temperature": 4.0, "alpha": 0.9}
CONVERGENCE_EPOCHS = 20  # the comparison's schedule; other epoch counts (patience runs) get a file of their own


def convergence_recipe(epochs: int) -> dict:
    return {"lr": 0.01, "warmup_epochs": max(1, epochs // 10), "augment": {"shift": 2, "flip": True},
            "teacher_views": 8}


def convergence_methods(epochs: int) -> dict:
    return {
        "scratch": {"alpha": 0.0},
        "kd": KD_PUBLISHED,
        "dkd": {"alpha": 0.0, "temperature": 4.0,
                "dkd": {"alpha": 1.0, "beta": 8.0, "warmup_epochs": max(1, round(epochs / 12))}},
        "function matching": {"alpha": 1.0, "temperature": 1.0},
        "function matching (mixup)": {"alpha": 1.0, "temperature": 1.0, "augment": None, "teacher_views": 0,
                                      "consistent": {"crop_area": 1.0, "shift": 2, "flip": True, "mixup": 1.0}},
        "kd+features": {**KD_PUBLISHED, "features": FEATURES},
        "standard schedule": {**KD_PUBLISHED, "features": FEATURES, "attention": ATTENTION,
                              "classifier": {"weight": 1.0}, "schedule": "standard"},
    }


FASHION = "/usr/share/datasets/fashion-mnist"
INPUT_HW = {"digits": (8, 8), "fashion-mnist": (28, 28)}
_input_hw = [(8, 8)]  # the data set's image size, set in main()


def student_factory(spec: str):
    family, width, depth = spec.split(":")
    return lambda: build_model(family, width=float(width), depth=float(depth), in_channels=1, num_classes=10,
                               input_hw=_input_hw[0])


def load(name: str):
    if name == "digits":
        return load_dataset(DigitsData(kind="digits"), seed=0)
    return load_dataset(IdxData(kind="idx", images=f"{FASHION}/train-images-idx3-ubyte.gz",
                                labels=f"{FASHION}/train-labels-idx1-ubyte.gz",
                                test_images=f"{FASHION}/t10k-images-idx3-ubyte.gz",
                                test_labels=f"{FASHION}/t10k-labels-idx1-ubyte.gz", val_fraction=0.1), seed=0)


def train_teacher(data, width: float, depth: float, epochs: int, shift: int = 0, flip: bool = False,
                  batch_size: int = 64, lr: float = 3e-3):
    seed_everything(0)
    teacher = build_model("resnet", width=width, depth=depth, in_channels=1, num_classes=10, input_hw=_input_hw[0])
    views = Augment(shift=shift, flip=flip)
    cfg = TrainedTeacher(kind="train", family="resnet", width=width, depth=depth, epochs=epochs,
                         batch_size=batch_size, lr=lr, augment=views)
    fit(teacher, data.train, data.val, lambda x, logits, y, idx, epoch: F.cross_entropy(logits, y), cfg, seed=0,
        label="teacher", console=QUIET, augment=augmentation.build(views))
    return teacher


def trained_teacher(args, data) -> tuple[torch.nn.Module, float]:
    """The teacher and the seconds its training took: trained here, or loaded from --teacher-checkpoint when that
    was trained with the same settings (its .json sidecar says which and how long it took)."""
    t_width, t_depth = map(float, args.teacher.split(":"))
    settings = {"teacher": args.teacher, "epochs": args.teacher_epochs, "shift": args.teacher_shift,
                "data": args.data}
    recipe = {"flip": args.teacher_flip, "batch_size": args.teacher_batch_size, "lr": args.teacher_lr}
    settings.update({k: v for k, v in recipe.items() if v != TEACHER_RECIPE[k]})  # older sidecars lack the defaults
    ckpt = args.teacher_checkpoint
    if ckpt and ckpt.exists():
        sidecar = json.loads(ckpt.with_suffix(".json").read_text())
        if sidecar["settings"] != settings:
            sys.exit(f"--teacher-checkpoint: {ckpt} was trained with {sidecar['settings']}, not {settings}")
        teacher = build_model("resnet", width=t_width, depth=t_depth, in_channels=1, num_classes=10,
                              input_hw=_input_hw[0])
        teacher.load_state_dict(torch.load(ckpt, weights_only=True))
        return teacher.eval(), sidecar["seconds"]
    started = time.perf_counter()
    teacher = train_teacher(data, t_width, t_depth, args.teacher_epochs, args.teacher_shift, **recipe)
    seconds = time.perf_counter() - started
    if ckpt:
        torch.save(teacher.state_dict(), ckpt)
        ckpt.with_suffix(".json").write_text(json.dumps({"settings": settings, "seconds": seconds,
                                                         "threads": torch.get_num_threads()}))
    return teacher, seconds


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
    run = distill_model(student, source, data, cfg, seed=seed, label=name, console=QUIET)
    return {"accuracy": accuracy(predict(student, data.test.x), data.test.y), "seconds": time.perf_counter() - start,
            "best_val_accuracy": run.result.best_val_accuracy,
            "val_curve": [h["val_accuracy"] for h in run.result.history]}


def transfer_subset(data, fraction: float, seed: int = 0):
    """The same data with `fraction` of each class's training examples (a fixed draw); validation and
    test splits unchanged."""
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(data.train.y == c))[:max(1, round(fraction * n))]
                                   for c, n in enumerate(np.bincount(data.train.y))]))
    return dataclasses.replace(data, train=Split(data.train.x[keep], data.train.y[keep]))


def compare_methods(teacher, data, student_spec: str, seeds: int, epochs: int, methods: dict = METHODS) -> dict:
    out = {}
    for name, overrides in methods.items():
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
    parser.add_argument("--teacher-flip", action="store_true", help="random left-right flips too")
    parser.add_argument("--teacher-batch-size", type=int, default=TEACHER_RECIPE["batch_size"])
    parser.add_argument("--teacher-lr", type=float, default=TEACHER_RECIPE["lr"])
    parser.add_argument("--transfer-fraction", type=float, default=0.25,
                        help="share of the training split the second comparison distills on")
    parser.add_argument("--data", choices=sorted(INPUT_HW), default="digits")
    parser.add_argument("--long-epochs", type=int, default=0,
                        help="fashion-mnist: also run the two best methods for this many epochs (patience)")
    parser.add_argument("--batch-size", type=int, default=BASE["batch_size"], help="the students' batch size")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--teacher-checkpoint", type=Path,
                        help="load the teacher from this state dict if it exists, else train it and save it there "
                             "(the teacher's training time is then read from its .json beside it)")
    parser.add_argument("--reuse-whole-split", action="store_true",
                        help="take the whole-split comparison from the results file instead of running it again "
                             "(the runs are deterministic: same settings, same numbers); only with the same settings")
    parser.add_argument("--convergence", action="store_true",
                        help="the resumable at-convergence comparison (see convergence()); with --students")
    parser.add_argument("--students", default="mobilenetv2:0.125:0.5,mobilenetv2:0.25:0.5",
                        help="--convergence: comma-separated family:width:depth")
    parser.add_argument("--screen", default="",
                        help="--convergence: the methods this process screens (comma-separated; default all); "
                             "with several processes, each waits for the others' screen before confirming")
    parser.add_argument("--confirm-seeds", default="1,2",
                        help="--convergence: the seeds this process runs scratch and the best methods on (none: "
                             "screen only)")
    parser.add_argument("--confirm-best", type=int, default=2,
                        help="--convergence: how many of the screen's best methods run on the confirming seeds")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    BASE["batch_size"] = args.batch_size
    _input_hw[0] = INPUT_HW[args.data]
    data = load(args.data)
    teacher, teacher_seconds = trained_teacher(args, data)
    if args.convergence:
        return convergence(args, data, teacher, teacher_seconds)
    if args.data == "fashion-mnist":
        return fashion(args, data, teacher, teacher_seconds)
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


def fashion(args, data, teacher, teacher_seconds: float) -> None:
    """The Fashion-MNIST comparison: whole training split, official test split, FASHION_METHODS, seeds; then the
    two best for --long-epochs; and the teacher-output cache's timing on this data. The results file is written
    after every method, so a run cut short keeps what it measured."""
    make_student = student_factory(args.student)
    out = HERE / "results" / "distill_methods_fashion.json"
    summary = {"benchmark": "distill_methods_fashion", "date": time.strftime("%Y-%m-%d"), "seeds": args.seeds,
               "epochs": args.epochs, "batch_size": BASE["batch_size"], "threads": torch.get_num_threads(),
               "student": args.student, "student_params": count_params(make_student()),
               "teacher": f"resnet:{args.teacher}", "teacher_epochs": args.teacher_epochs,
               "teacher_shift": args.teacher_shift, "teacher_params": count_params(teacher),
               "teacher_seconds": teacher_seconds, "machine": f"{os.cpu_count()} CPUs",
               "teacher_accuracy": accuracy(predict(teacher, data.test.x), data.test.y),
               "train_examples": len(data.train), "test_examples": len(data.test), "methods": {}}
    print(f"teacher {summary['teacher_accuracy']:.2%} in {teacher_seconds:.0f} s", file=sys.stderr)

    def save() -> None:
        summary["load_average"] = os.getloadavg()
        out.write_text(json.dumps(summary, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as cache:
        os.environ["EDGEDISTILL_CACHE"] = cache  # a cold cache: the first KD run pays for the teacher's outputs
        summary["cache"] = fashion_cache_timing(teacher, data, args.student)
        save()
        for name, overrides in FASHION_METHODS.items():
            summary["methods"].update(compare_methods(teacher, data, args.student, args.seeds, args.epochs,
                                                      {name: overrides}))
            save()
        if args.long_epochs:
            best = sorted((m for m in summary["methods"] if m != "scratch"),
                          key=lambda m: -summary["methods"][m]["mean"])[:2]
            summary["long_epochs"], summary["long"] = args.long_epochs, {}
            for name in ["scratch", *best]:
                summary["long"].update(compare_methods(teacher, data, args.student, args.seeds, args.long_epochs,
                                                       {name: FASHION_METHODS[name]}))
                save()
    _update_fashion_readme(summary)


def convergence(args, data, teacher, teacher_seconds: float) -> None:
    """Methods compared at convergence, resumable cell by cell: for each student size, every method of
    convergence_methods() on seed 0 (the screen), then scratch and the methods that validated best (--confirm-best,
    default 2) on seeds 1 and 2, every cell with convergence_recipe(). Each finished cell (student, method, seed) is
    merged into the results file at once under a lock, so a rerun with the same settings skips the cells already
    there, and several processes can share the file: one per student size (`--students`), or per share of the
    screen (`--screen`, `--confirm-seeds`). The summary has mean and std over seeds, the paired per-seed difference
    to scratch, the seconds per epoch, and whether scratch's validation curve is flat over the last 20 % of epochs
    (moved by at most 0.5 points)."""
    # The comparison at CONVERGENCE_EPOCHS has its own file and table; another schedule (patience) gets its own.
    schedule = "" if args.epochs == CONVERGENCE_EPOCHS else f"_{args.epochs}_epochs"
    out = HERE / "results" / f"distill_methods_{args.data.replace('-', '_')}_convergence{schedule}.json"
    recipe, methods = convergence_recipe(args.epochs), convergence_methods(args.epochs)
    settings = {"data": args.data, "epochs": args.epochs, "teacher": args.teacher,
                "teacher_epochs": args.teacher_epochs, "teacher_shift": args.teacher_shift,
                "teacher_recipe": {"flip": args.teacher_flip, "batch_size": args.teacher_batch_size,
                                   "lr": args.teacher_lr},
                "batch_size": BASE["batch_size"], "recipe": recipe}
    facts = {"benchmark": "distill_methods_convergence", "teacher_seconds": teacher_seconds,
             "teacher_params": count_params(teacher), "cpu_flags": host_cpu_flags(),
             "teacher_accuracy": accuracy(predict(teacher, data.test.x), data.test.y),
             "teacher_on_training_split": teacher_confidence(teacher, data.train)}

    as_stored = json.loads(json.dumps({"settings": settings, "methods": methods}))  # tuples as JSON lists

    def merged(new: dict) -> dict:
        """The results file with `new` cells added (read, merged and written under the lock)."""
        with open(out.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = json.loads(out.read_text()) if out.exists() else {"settings": settings, "cells": {}}
            if state["settings"] != as_stored["settings"]:
                sys.exit(f"{out} holds a comparison with other settings ({state['settings']}); move it away to "
                         "start this one")
            stored = state.get("methods", {})
            changed = [m for m in stored if stored[m] != as_stored["methods"].get(m, stored[m])]
            if changed:
                sys.exit(f"{out}: method(s) {', '.join(changed)} ran with other settings; move the file away or "
                         "rename the changed method")
            state["methods"] = {**stored, **as_stored["methods"]}  # a new method keeps the cells measured
            state.update(facts, date=time.strftime("%Y-%m-%d"), load_average=os.getloadavg())
            state["cells"].update(new)
            state["summary"] = convergence_summary(state["cells"], args.epochs)
            out.write_text(json.dumps(state, indent=2) + "\n")
            _update_convergence_readme(state, schedule)
            return state["cells"]

    cells = merged({})

    def cell(student: str, method: str, seed: int) -> dict:
        key = f"{student}|{method}|{seed}"
        if key not in cells:
            result = run_method(method, {**recipe, **methods[method]}, teacher, data, student, seed,
                                args.epochs)
            result.update(threads=torch.get_num_threads(), student_params=count_params(student_factory(student)()))
            cells.update(merged({key: result}))
            print(f"{key}: {result['accuracy']:.4f} in {result['seconds']:.0f} s", file=sys.stderr, flush=True)
        return cells[key]

    mine = args.screen.split(",") if args.screen else list(methods)
    unknown = sorted(set(mine) - set(methods))
    if unknown:
        sys.exit(f"--screen: unknown method(s) {', '.join(unknown)}; the methods: {', '.join(methods)}")
    confirm_seeds = [int(seed) for seed in args.confirm_seeds.split(",") if seed]
    for student in args.students.split(","):
        for method in mine:
            cell(student, method, 0)
        if not confirm_seeds:
            continue
        while not all(f"{student}|{m}|0" in cells for m in methods):  # another process screens the rest
            time.sleep(30)
            cells.update(merged({}))
        screen = {m: cells[f"{student}|{m}|0"] for m in methods}
        best = sorted((m for m in screen if m != "scratch"), key=lambda m: -screen[m]["best_val_accuracy"])
        for seed in confirm_seeds:
            for method in ["scratch", *best[:args.confirm_best]]:
                cell(student, method, seed)


def teacher_confidence(teacher, split: Split) -> dict:
    """What the teacher tells a student about the images it trains on: its accuracy there, and how much
    probability it puts on its top class at T 1 (function matching) and T 4 (KD). Near 1 at T 1, its targets are
    nearly the labels themselves."""
    logits = torch.from_numpy(predict(teacher, split.x))
    return {"accuracy": accuracy(logits.numpy(), split.y),
            **{f"mean_top_probability_t{t}": float(F.softmax(logits / t, dim=1).max(1).values.mean()) for t in (1, 4)}}


def convergence_summary(cells: dict, epochs: int) -> dict:
    """Per student and method: test accuracy mean and std over its seeds, the paired differences to scratch on
    the same seeds, seconds per epoch of the screen's run (seed 0: the confirming runs may have been paused and
    resumed); and scratch's plateau over the last 20 % of epochs."""
    summary: dict = {}
    for key, c in cells.items():
        student, method, seed = key.rsplit("|", 2)
        summary.setdefault(student, {}).setdefault(method, {})[int(seed)] = c
    out = {}
    for student, methods in summary.items():
        scratch = methods.get("scratch", {})
        tail = max(1, epochs // 5)
        plateau = [max(c["val_curve"][-tail:]) - min(c["val_curve"][-tail:]) for c in scratch.values()]
        out[student] = {"scratch_flat_last_20pct": bool(plateau) and max(plateau) <= 0.005,
                        "scratch_last_20pct_spread": max(plateau) if plateau else None, "methods": {}}
        for method, runs in methods.items():
            accs = [runs[s]["accuracy"] for s in sorted(runs)]
            paired = [runs[s]["accuracy"] - scratch[s]["accuracy"] for s in sorted(runs) if s in scratch]
            out[student]["methods"][method] = {
                "seeds": sorted(runs), "mean": statistics.mean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "paired_vs_scratch": paired,
                "seconds_per_epoch": runs[min(runs)]["seconds"] / epochs}
    return out


def fashion_cache_timing(teacher, data, student_spec: str) -> dict:
    """Seconds for one KD epoch on this data: the teacher online, then its outputs computed into the cache (a
    miss), then read from it (a hit)."""
    out = {}
    for label, cache_mode in (("online", "off"), ("cache miss (first run)", "auto"), ("cache hit", "auto")):
        cfg = Distill(**{**BASE, "epochs": 1, "cache": cache_mode})
        seed_everything(0)
        run = distill_model(student_factory(student_spec)(), teacher, data, cfg, seed=0, label=label, console=QUIET)
        out[label] = {"seconds_per_epoch": run.seconds, "status": run.cache}
    out["hit_over_online"] = out["cache hit"]["seconds_per_epoch"] / out["online"]["seconds_per_epoch"]
    return out


def _update_fashion_readme(s: dict) -> None:
    t_width, t_depth = s["teacher"].split(":")[1:]
    rows = [f"Teacher ResNet {t_width}×{t_depth}, {s['teacher_params']:,} params, trained {s['teacher_epochs']} "
            f"epochs (random shifts of up to {s['teacher_shift']} px) here in {s['teacher_seconds'] / 60:.0f} min, "
            f"test accuracy {s['teacher_accuracy']:.2%}. Student {s['student']} ({s['student_params']:,} params, "
            f"{s['student_params'] / s['teacher_params']:.2%} of the teacher), {s['epochs']} epochs, batch "
            f"{s['batch_size']}, seeds 0–{s['seeds'] - 1}, the whole {s['train_examples']:,}-image training split "
            f"(the validation split drawn from the training files), the official {s['test_examples']:,}-image test "
            f"split; {s['date']}, {s['machine']}, {s['threads']} torch thread(s), load average "
            f"{s['load_average'][0]:.2f} at the end.", "", *_method_rows(s["methods"])]
    if "long" in s:
        rows += ["", f"The two best and scratch at {s['long_epochs']} epochs:", "", *_method_rows(s["long"])]
    c = s["cache"]
    rows += ["", "Teacher-output cache on this data (one KD epoch of the student above; seconds):", "",
             "| teacher outputs | s / epoch |", "|---|---|"]
    rows += [f"| {k} | {c[k]['seconds_per_epoch']:.1f} |" for k in ("online", "cache miss (first run)", "cache hit")]
    rows.append(f"\nCache hit / online: **{c['hit_over_online']:.2f}×** the time per epoch.")
    update_section("distill_methods_fashion", "## Distillation methods on Fashion-MNIST\n\n"
                   "`python benchmarks/distill_methods.py --data fashion-mnist`", rows)


def _update_convergence_readme(state: dict, schedule: str) -> None:
    s, recipe = state["settings"], state["settings"]["recipe"]
    rows = [f"Teacher ResNet {s['teacher']}, {state['teacher_params']:,} params, {s['teacher_epochs']} epochs "
            f"(shifts of up to {s['teacher_shift']} px{', flips' if s['teacher_recipe']['flip'] else ''}, batch "
            f"{s['teacher_recipe']['batch_size']}), {state['teacher_seconds'] / 60:.0f} min here, test accuracy "
            f"{state['teacher_accuracy']:.2%}. Every cell: {s['epochs']} epochs, batch {s['batch_size']}, Adam at LR "
            f"{recipe['lr']}, {recipe['warmup_epochs']} warm-up epoch(s) then cosine, shifts of up to "
            f"{recipe['augment']['shift']} px and flips, {recipe['teacher_views']} cached teacher views per image "
            "(with mixup, or a teacher layer hooked, the teacher runs online on every batch); "
            f"whole test split. {state['date']}, load average {state['load_average'][0]:.2f} at the last write."]
    on_train = state.get("teacher_on_training_split")
    if on_train:
        rows[0] += (f" On its own training split the teacher scores {on_train['accuracy']:.2%} and puts "
                    f"{on_train['mean_top_probability_t1']:.1%} of its probability on its top class on average at T 1 "
                    f"({on_train['mean_top_probability_t4']:.1%} at T 4).")
    for student, summary in state["summary"].items():
        params = next(c["student_params"] for k, c in state["cells"].items() if k.startswith(f"{student}|"))
        spread = summary["scratch_last_20pct_spread"]
        rows += ["", f"**{student}** ({params:,} params, {params / state['teacher_params']:.2%} of the teacher); "
                 + ("scratch's validation accuracy moved at most "
                    f"{spread * 100:.2f} points over the last 20 % of epochs." if spread is not None else ""), "",
                 "| method | seeds | test accuracy (mean ± std) | paired vs scratch, per seed | s / epoch |",
                 "|---|---|---|---|---|"]
        for method, m in sorted(summary["methods"].items(), key=lambda kv: -kv[1]["mean"]):
            paired = ", ".join(f"{d * 100:+.2f}" for d in m["paired_vs_scratch"])
            rows.append(f"| {method} | {','.join(map(str, m['seeds']))} | {m['mean']:.2%} ± {m['std']:.2%} | "
                        f"{paired} pt | {m['seconds_per_epoch']:.1f} |")
    update_section(f"distill_methods_convergence{schedule}",
                   f"## Distillation methods on Fashion-MNIST, {s['epochs']} epochs", rows)


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
