"""Record a finished `edgedistill run` (of any pipeline): its stage times, accuracies, sizes and verdict, and
the machine it ran on, so that a README can quote a long run (Fashion-MNIST takes a quarter of an hour) with a
results file behind it.

Writes benchmarks/results/run_<pipeline>.json and a table between its markers in benchmarks/README.md.
Usage: python benchmarks/pipeline_run.py RUN_DIR [--note TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from _readme import update_section

from edgedistill.config.device import host_cpu, host_cpu_flags

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--note", default="", help="how the run was made (e.g. resumed after a student change)")
    parser.add_argument("--variant", default="", help="a name for a variant of the pipeline (another student): "
                                                      "run_<pipeline>-<variant>.json, its own README section")
    args = parser.parse_args()
    manifest = json.loads((args.run / "manifest.json").read_text())
    results = json.loads((args.run / "report" / "results.json").read_text())
    record = {
        "pipeline": results["pipeline"], "device": results["device"]["name"], "generated_at": results["generated_at"],
        "host": platform.node(), "cpus": os.cpu_count(), "cpu": host_cpu(), "cpu_flags": host_cpu_flags(),
        "load_average_now": os.getloadavg(), "note": args.note,
        "stages_s": {name: s["seconds"] for name, s in manifest["stages"].items()},
        "resumed": [name for name, s in manifest["stages"].items() if s.get("resumed")],
        "teacher": results["teacher"], "student": results["student"],
        "artifacts": [{k: a.get(k) for k in ("format", "precision", "bytes", "accuracy", "latency_ms", "peak_rss_mb",
                                             "arm", "measured_on", "status")} for a in results["artifacts"]],
        "verdict": {k: results["verdict"].get(k) for k in ("fits", "scope", "summary")},
        # Median wall time of one training epoch (training and validation), where the history records it.
        "epoch_s": {name: seconds for name, seconds in (
            ("teacher", epoch_seconds(teacher_history(manifest))),
            ("distill", epoch_seconds(results["training"].get("distill")))) if seconds is not None},
        "distillation": {k: (results.get("distillation") or {}).get(k)
                         for k in ("baseline", "ship", "shipped", "distilled_accuracy", "teacher_cache")},
    }
    if args.variant:
        record["pipeline"] = f"{record['pipeline']}-{args.variant}"
    out = HERE / "results" / f"run_{record['pipeline']}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    _update_readme(record)
    print(out)


def teacher_history(manifest: dict) -> list[dict] | None:
    """The teacher's training history: trained here, or fine-tuned from a checkpoint (teacher.finetune)."""
    metrics = manifest["stages"].get("teacher", {}).get("metrics", {})
    return (metrics.get("finetune") or {}).get("history") or metrics.get("history")


def epoch_seconds(history: list[dict] | None) -> float | None:
    times = sorted(h["seconds"] for h in history or [] if isinstance(h, dict) and "seconds" in h)
    return times[len(times) // 2] if times else None


def _update_readme(r: dict) -> None:
    stages = ", ".join(f"{name} {seconds:.0f} s" + (" (kept from an earlier run)" if name in r["resumed"] else "")
                       for name, seconds in r["stages_s"].items())
    lines = [f"`edgedistill run` of {r['pipeline']} → {r['device']}, {r['generated_at'][:10]}, host {r['host']} "
             f"({r.get('cpu', 'CPU')}, {r['cpus']} CPUs; flags {' '.join(r.get('cpu_flags') or ['not recorded'])}). "
             f"Stages: {stages}; {sum(r['stages_s'].values()) / 60:.1f} min in all"
             + "".join(f"; one {name} epoch {s:.1f} s (median)" for name, s in (r.get("epoch_s") or {}).items())
             + ". "
             f"{r['note']}", "",
             f"Teacher {r['teacher']['arch']}, {r['teacher']['params']:,} params, {r['teacher']['accuracy']:.2%}; "
             f"student {r['student']['arch']}, {r['student']['params']:,} params, {r['student']['accuracy']:.2%} "
             "(PyTorch, test split).", "",
             "| artifact | size KiB | accuracy | p50 ms | p90 ms | peak RSS MB | on emulated ARM | where timed |",
             "|---|---|---|---|---|---|---|---|"]
    where = {"device": f"on {r['device']}", "host": "this host", None: "not timed",
             "stand-in": f"this host, standing in for {r['device']}"}
    for a in r["artifacts"]:
        lat, arm = a.get("latency_ms") or {}, a.get("arm") or {}
        arm_cell = f"{arm['top1_agreement']:.1%} agreement ({arm['cpu']})" if arm.get("top1_agreement") is not None \
            else "—"
        lines.append(f"| {a['format']} {a['precision']} | {(a['bytes'] or 0) / 1024:.1f} | "
                     f"{a['accuracy']:.2%} | {lat.get('p50', float('nan')):.3f} | {lat.get('p90', float('nan')):.3f} | "
                     f"{a.get('peak_rss_mb') or float('nan'):.0f} | {arm_cell} | {where[a.get('measured_on')]} |")
    lines += ["", f"Verdict: {r['verdict']['summary']}."]
    update_section(f"run_{r['pipeline']}", f"## Run: {r['pipeline']}\n\n`python benchmarks/pipeline_run.py RUN_DIR` "
                   "after `edgedistill run`", lines)


if __name__ == "__main__":
    main()
