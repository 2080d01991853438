"""Which teacher is worth distilling from? The teacher stages of several runs of one pipeline side by side
(another resolution, more fine-tuning epochs): accuracy on the run's validation and test splits, the best epoch,
the median epoch time and the stage's wall time, read from each run's manifest (nothing is trained here).

A run may hold the teacher stage alone (stopped after it); its resolution and epochs are read from the run's
pipeline.resolved.yaml, so a row says what was changed. Writes benchmarks/results/teacher_runs_<pipeline>.json and
a table between its markers in benchmarks/README.md.
Usage: python benchmarks/teacher_runs.py RUN_DIR [RUN_DIR ...] [--note TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from _readme import update_section
from pipeline_run import epoch_seconds, teacher_history

from edgedistill.config.device import host_cpu, host_cpu_flags
from edgedistill.config.pipeline import load_pipeline

HERE = Path(__file__).resolve().parent


def teacher_row(run: Path) -> dict:
    spec = load_pipeline(run / "pipeline.resolved.yaml")
    manifest = json.loads((run / "manifest.json").read_text())
    stage = manifest["stages"]["teacher"]
    if stage["status"] != "completed":
        raise SystemExit(f"{run}: the teacher stage is {stage['status']}, not completed")
    metrics, finetune = stage["metrics"], spec.teacher.finetune
    history = teacher_history(manifest) or []
    return {"run": str(run), "pipeline": spec.name, "teacher": metrics["family"],
            "resolution": spec.data.preprocess.resize, "epochs": finetune.epochs if finetune else None,
            "val_accuracy": metrics["val_accuracy"], "test_accuracy": metrics["accuracy"],
            "best_epoch": (metrics.get("finetune") or metrics).get("best_epoch"),
            "val_by_epoch": [h.get("val_accuracy") for h in history], "epoch_s": epoch_seconds(history),
            "stage_s": stage["seconds"], "majority_share": metrics["floor"]["majority_share"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--note", default="", help="how the runs were made (what else shared the cores)")
    args = parser.parse_args()
    rows = [teacher_row(run) for run in args.runs]
    if len({r["pipeline"] for r in rows}) > 1:
        raise SystemExit("runs of different pipelines: " + ", ".join(sorted({r["pipeline"] for r in rows})))
    record = {"benchmark": "teacher_runs", "pipeline": rows[0]["pipeline"], "host_cpu": host_cpu(),
              "cpu_flags": host_cpu_flags(), "cpus": os.cpu_count(), "load_average_now": os.getloadavg(),
              "note": args.note, "rows": rows}
    (HERE / "results" / f"teacher_runs_{record['pipeline']}.json").write_text(json.dumps(record, indent=2) + "\n")
    pct = lambda v: f"{v:.2%}"  # noqa: E731
    lines = [f"`python benchmarks/teacher_runs.py RUN_DIR ...` ({record['host_cpu']}, {record['cpus']} CPUs); "
             f"read from each run's teacher stage. {args.note}", "",
             "| resolution | epochs | val accuracy | test accuracy | best epoch | validation accuracy by epoch "
             "| s per epoch (median) | stage s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        curve = " ".join(f"{v * 100:.1f}" for v in r["val_by_epoch"] if v is not None)
        epoch = f"{r['epoch_s']:.0f}" if r["epoch_s"] else "—"  # histories before 2026-12 have no epoch times
        lines.append(f"| {r['resolution']} | {r['epochs']} | {pct(r['val_accuracy'])} | {pct(r['test_accuracy'])} | "
                     f"{r['best_epoch']} | {curve} | {epoch} | {r['stage_s']:.0f} |")
    update_section(f"teacher_runs_{record['pipeline']}", f"## Teachers compared: {record['pipeline']}", lines)


if __name__ == "__main__":
    main()
