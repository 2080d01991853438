"""What a bank of cached teacher views saves (distill.teacher_views): on a finished run's data, teacher and student
architecture, the seconds of distillation epochs with the teacher run online on every augmented batch, against
building the bank of K seeded views once and epochs that read it. One process, the machine otherwise idle; the
cache is a fresh temporary folder, so the bank is built, not found.

Writes benchmarks/results/teacher_views_<pipeline>.json and a table in benchmarks/README.md.
Usage: python benchmarks/teacher_views.py RUN_DIR [--epochs 2] [--views 8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _readme import update_section
from distill_vs_scratch import load_run_teacher
from rich.console import Console

from edgedistill.config.device import host_cpu, host_cpu_flags
from edgedistill.config.pipeline import load_pipeline
from edgedistill.data import load_dataset
from edgedistill.distill.distiller import distill_model
from edgedistill.distill.trainer import seed_everything
from edgedistill.models.io import ArchInfo, pipeline_families

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--views", type=int, default=8)
    args = parser.parse_args()
    spec = load_pipeline(args.run_dir / "pipeline.resolved.yaml")
    if spec.distill.augment is None:
        raise SystemExit(f"{spec.name}: distill.augment is not set; a bank of views needs augmentation")
    data = load_dataset(spec.data, spec.seed)
    teacher = load_run_teacher(args.run_dir, spec)
    arch = ArchInfo.load(args.run_dir / "student" / "arch.json", pipeline_families(spec))
    console = Console(stderr=True)
    cells = {}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["EDGEDISTILL_CACHE"] = cache
        for name, views in (("online", 0), ("bank", args.views)):
            cfg = spec.distill.model_copy(update={"epochs": args.epochs, "teacher_views": views})
            seed_everything(spec.seed)
            started = time.perf_counter()
            run = distill_model(arch.build(), teacher, data, cfg, seed=spec.seed, label=name, console=console)
            total = time.perf_counter() - started
            epochs = [h["seconds"] for h in run.result.history]
            cells[name] = {"views": views, "seconds": round(total, 1), "epoch_s": epochs,
                           "setup_s": round(total - sum(epochs), 1), "teacher_outputs": run.cache}
            console.print(f"{name}: {json.dumps(cells[name])}")
    online, bank = cells["online"], cells["bank"]
    per_online = sum(online["epoch_s"]) / len(online["epoch_s"])
    per_bank = sum(bank["epoch_s"]) / len(bank["epoch_s"])
    full = spec.distill.epochs
    record = {"benchmark": "teacher_views", "pipeline": spec.name, "date": time.strftime("%Y-%m-%d"),
              "host_cpu": host_cpu(), "vnni": any("vnni" in f for f in host_cpu_flags()), "cpus": os.cpu_count(),
              "load_average": os.getloadavg(), "train_images": len(data.train), "input": list(data.input_shape),
              "teacher": str(spec.teacher.family), "student": f"{arch.family} x{arch.width}",
              "augment": spec.distill.augment.model_dump(), "cells": cells,
              "projected": {"epochs": full, "online_s": round(online["setup_s"] + full * per_online),
                            "bank_s": round(bank["setup_s"] + full * per_bank)}}
    out = HERE / "results" / f"teacher_views_{spec.name}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    saving = record["projected"]["online_s"] / record["projected"]["bank_s"]
    update_section(f"teacher_views_{spec.name}", f"## A bank of teacher views: {spec.name}", [
        f"`python benchmarks/teacher_views.py RUN_DIR` ({record['date']}, {record['host_cpu']}, {record['cpus']} CPUs, "
        f"load average {record['load_average'][0]:.2f} at the end): {len(data.train):,} training images of "
        f"{'×'.join(map(str, data.input_shape))}, teacher {record['teacher']}, student {record['student']}, "
        f"{args.epochs} epochs each way.", "",
        "| teacher outputs | set-up s | s per epoch |", "|---|---|---|",
        f"| online (every augmented batch) | {online['setup_s']:.1f} | {per_online:.1f} |",
        f"| bank of {args.views} views per image (built here) | {bank['setup_s']:.1f} | {per_bank:.1f} |", "",
        f"Projected for the pipeline's {full} epochs: {record['projected']['online_s'] / 60:.1f} min online against "
        f"{record['projected']['bank_s'] / 60:.1f} min with the bank ({saving:.1f}× less); a later run that finds "
        "the bank in the cache skips its set-up."])
    print(out)


if __name__ == "__main__":
    main()
