"""Distilled against scratch over seeds, on a finished pipeline run's own split and teacher: for each seed the
student is built fresh (its initial weights drawn from the seed), distilled with the pipeline's distill section,
and the same initial student trained from labels alone with the same epochs, batch, optimizer, LR and augmentation
(the distill stage's scratch baseline); both are scored on the run's test split. The split is the run's (its
seed's), so seeds vary the initial weights, the example order and the augmentation only (a student that starts
from the teacher, student.init: teacher or pretrained, starts from the run's own initial weights for every seed).
The run's own seed is read from its manifest (its distill stage trained both arms exactly so), not trained again.

Each finished cell is written to benchmarks/results/distill_vs_scratch_<pipeline>.json at once, and cells already
there are kept, so a long benchmark can be stopped and resumed. The table (mean ± std, the paired per-seed
difference, seconds per arm) goes to benchmarks/README.md.
Usage: python benchmarks/distill_vs_scratch.py RUN_DIR [--seeds 0 1 2] [--variant NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import torch
from _readme import update_section
from rich.console import Console

from edgedistill.config.device import host_cpu, host_cpu_flags
from edgedistill.config.pipeline import load_pipeline
from edgedistill.data import load_dataset
from edgedistill.distill.distiller import distill_model, train_from_labels
from edgedistill.distill.trainer import accuracy, predict, seed_everything
from edgedistill.models.io import ArchInfo, load_weights, pipeline_families
from edgedistill.models.teachers import teacher_from_run

HERE = Path(__file__).resolve().parent


def load_run_teacher(run_dir: Path, spec):
    """The teacher the run's teacher stage settled on (its saved weights, or the foreign model and its new head)."""
    stage = run_dir / "teacher"
    arch = ArchInfo.load(stage / "arch.json", pipeline_families(spec))
    weights, head = stage / "model.safetensors", stage / "head.safetensors"
    return teacher_from_run(arch, getattr(spec.teacher, "path", None), weights if weights.exists() else None,
                            head if head.exists() else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", default="", help="a name for a variant of the pipeline (another student), "
                                                      "as pipeline_run.py --variant")
    args = parser.parse_args()
    spec = load_pipeline(args.run_dir / "pipeline.resolved.yaml")
    name = f"{spec.name}-{args.variant}" if args.variant else spec.name
    results = HERE / "results" / f"distill_vs_scratch_{name}.json"
    record = json.loads(results.read_text()) if results.exists() else {"cells": []}
    done = {(c["seed"], c["arm"]) for c in record["cells"]}
    data = load_dataset(spec.data, spec.seed)
    teacher = load_run_teacher(args.run_dir, spec)
    arch = ArchInfo.load(args.run_dir / "student" / "arch.json", pipeline_families(spec))
    teacher_accuracy = accuracy(predict(teacher.eval(), data.test.x), data.test.y)
    flags = host_cpu_flags()
    record.update({"benchmark": "distill_vs_scratch", "pipeline": name, "run_dir": str(args.run_dir),
                   "host_cpu": host_cpu(), "cpu_flags": flags, "vnni": any("vnni" in f for f in flags),
                   "split_seed": spec.seed, "train": len(data.train), "val": len(data.val), "test": len(data.test),
                   "teacher": f"{spec.teacher.family if hasattr(spec.teacher, 'family') else spec.teacher.kind}",
                   "teacher_test_accuracy": teacher_accuracy,
                   "student": f"{arch.family} x{arch.width:g} depth x{arch.depth:g}, init {spec.student.init}",
                   "student_init_sha256": hashlib.sha256((args.run_dir / "student" / "init.safetensors")
                                                         .read_bytes()).hexdigest(),
                   "distill": spec.distill.model_dump(mode="json", exclude_none=True)})
    console = Console(stderr=True)
    if (spec.seed, "distilled") not in done and spec.seed in args.seeds:
        record["cells"] += run_cells(args.run_dir, spec.seed)
        results.write_text(json.dumps(record, indent=2) + "\n")
        done |= {(spec.seed, "distilled"), (spec.seed, "scratch")}
    for seed in args.seeds:
        for arm in ("distilled", "scratch"):
            if (seed, arm) in done:
                continue
            seed_everything(seed)
            student = arch.build()  # the same initial weights for both arms of a seed
            if spec.student.init != "random":  # the teacher's layers or checkpoint, the same for every seed
                load_weights(student, args.run_dir / "student" / "init.safetensors")
            started = time.perf_counter()
            if arm == "distilled":
                run = distill_model(student, teacher, data, spec.distill, seed=seed, label=f"distill seed {seed}",
                                    console=console)
            else:
                run = train_from_labels(student, data, spec.distill, seed=seed, console=console)
            cell = {"seed": seed, "arm": arm, "test_accuracy": accuracy(predict(student, data.test.x), data.test.y),
                    "val_accuracy": run.result.best_val_accuracy, "best_epoch": run.result.best_epoch,
                    "seconds": round(time.perf_counter() - started, 1), "teacher_outputs": run.cache,
                    "load_average": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M")}
            record["cells"].append(cell)
            results.write_text(json.dumps(record, indent=2) + "\n")  # kept as soon as it finishes
            console.print(json.dumps(cell))
    summarize(record)
    results.write_text(json.dumps(record, indent=2) + "\n")


def run_cells(run_dir: Path, seed: int) -> list[dict]:
    """Both arms of the run's own seed, as its distill stage recorded them (it needs distill.baseline: scratch)."""
    distill = json.loads((run_dir / "manifest.json").read_text())["stages"]["distill"]["metrics"]
    base = distill.get("baseline")
    if base is None:
        raise SystemExit(f"{run_dir}: the run trained no scratch baseline (distill.baseline); nothing to compare")
    common = {"seed": seed, "from_run": str(run_dir)}
    return [{**common, "arm": "distilled", "test_accuracy": distill["distilled_accuracy"],
             "val_accuracy": distill["val_accuracy"], "best_epoch": distill["best_epoch"],
             "seconds": round(sum(h.get("seconds", 0) for h in distill["history"]), 1) or None,
             "teacher_outputs": distill["teacher_cache"]},
            {**common, "arm": "scratch", "test_accuracy": base["accuracy"], "val_accuracy": base["val_accuracy"],
             "best_epoch": base["best_epoch"], "seconds": base["seconds"], "teacher_outputs": "not used"}]


def summarize(record: dict) -> None:
    by = {(c["seed"], c["arm"]): c for c in record["cells"]}
    seeds = sorted({s for s, _ in by if (s, "distilled") in by and (s, "scratch") in by})
    if not seeds:
        return
    pct = lambda v: f"{v * 100:.2f}"  # noqa: E731
    lines = [f"`python benchmarks/distill_vs_scratch.py RUN_DIR` on {record['pipeline']}'s run "
             f"({record['host_cpu']}, VNNI {'yes' if record['vnni'] else 'no'}; load average per cell in the JSON). "
             f"Split of seed {record['split_seed']}: {record['train']:,} / {record['val']:,} / {record['test']:,} "
             f"train / val / test; teacher {record['teacher']} {pct(record['teacher_test_accuracy'])} % on the test "
             f"split; student {record['student']}.", "",
             "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | s per run |",
             "|---|" + "---|" * (len(seeds) + 2)]
    for arm in ("distilled", "scratch"):
        values = [by[s, arm]["test_accuracy"] for s in seeds]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"| {arm} | " + " | ".join(pct(v) for v in values)
                     + f" | {pct(statistics.mean(values))} ± {pct(spread)} | "
                     f"{statistics.mean(by[s, arm]['seconds'] or 0 for s in seeds):.0f} |")
    diffs = [by[s, "distilled"]["test_accuracy"] - by[s, "scratch"]["test_accuracy"] for s in seeds]
    lines.append("| distilled − scratch (points) | " + " | ".join(f"{d * 100:+.2f}" for d in diffs)
                 + f" | {statistics.mean(diffs) * 100:+.2f} | |")
    record["summary"] = {"seeds": seeds, "mean_difference_points": statistics.mean(diffs) * 100}
    update_section(f"distill_vs_scratch_{record['pipeline']}",
                   f"## Distilled against scratch: {record['pipeline']}", lines)


if __name__ == "__main__":
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores this process may use (taskset)
    main()
