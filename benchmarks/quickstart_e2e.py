"""Time the quickstart end to end (`edgedistill run`), stage by stage, and record the result.

Writes benchmarks/results/quickstart_e2e.json and the table between the markers in benchmarks/README.md.
Usage: python benchmarks/quickstart_e2e.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _readme import update_section

from edgedistill.config.device import host_cpu, host_cpu_flags

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "quickstart_e2e.json"


def one_run(workdir: Path, env: dict | None = None) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgedistill", "run", "--out", str(workdir / "run")],
                          capture_output=True, text=True, cwd=workdir, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"edgedistill run failed ({proc.returncode}):\n{proc.stderr}")
    manifest = json.loads((workdir / "run" / "manifest.json").read_text())
    results = json.loads((workdir / "run" / "report" / "results.json").read_text())
    art = results["artifacts"][0]
    return {"wall_s": wall, "stages_s": {n: s["seconds"] for n, s in manifest["stages"].items()},
            "teacher_accuracy": results["teacher"]["accuracy"], "student_accuracy": results["student"]["accuracy"],
            "teacher_params": results["teacher"]["params"], "student_params": results["student"]["params"],
            "onnx_p50_ms": art["latency_ms"]["p50"], "onnx_p90_ms": art["latency_ms"]["p90"],
            "onnx_bytes": art["bytes"], "fits": results["verdict"]["fits"],
            "distillation_gain": (results["distillation"].get("baseline") or {}).get("gain"),
            "shipped": results["distillation"].get("shipped"),
            "emulated": any(a.get("arm") for a in results["artifacts"]), "training": results["environment"]["training"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs, load_before = [], os.getloadavg()
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_run(Path(tmp)))
        print(f"run {i + 1}/{args.repeats}: {runs[-1]['wall_s']:.1f} s", file=sys.stderr)
    # Training with one thread instead of the host's: the same seed and data, other sums, other weights.
    with tempfile.TemporaryDirectory() as tmp:
        one_thread = one_run(Path(tmp), {"OMP_NUM_THREADS": "1"})
    stages = list(runs[0]["stages_s"])
    summary = {
        "benchmark": "quickstart_e2e", "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
        "host": {"cpu": host_cpu(), "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                 "cpu_flags": host_cpu_flags()},
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "median_stage_s": {s: statistics.median(r["stages_s"][s] for r in runs) for s in stages},
        "runs": runs,
        "one_thread_run": one_thread,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    _update_readme(summary)
    print(json.dumps({k: summary[k] for k in ("median_wall_s", "median_stage_s")}, indent=2))


def _update_readme(summary: dict) -> None:
    r0 = summary["runs"][0]
    rows = ["| stage | median s |", "|---|---|"]
    rows += [f"| {stage} | {secs:.2f} |" for stage, secs in summary["median_stage_s"].items()]
    rows += [f"| **whole command (wall)** | **{summary['median_wall_s']:.2f}** |", "",
             f"Median of {summary['repeats']} runs on {summary['date']}, {summary['host']['cpu']}, "
             f"{summary['host']['cores']} cores. Run 1: teacher {r0['teacher_params']:,} params "
             f"{r0['teacher_accuracy']:.2%}, student {r0['student_params']:,} params {r0['student_accuracy']:.2%}, "
             f"ONNX {r0['onnx_bytes'] / 1024:.1f} KiB, p50 {r0['onnx_p50_ms']:.3f} ms, p90 {r0['onnx_p90_ms']:.3f} ms; "
             f"distilling over the scratch baseline {r0['distillation_gain'] * 100:+.2f} points ({r0['shipped']} "
             f"shipped); emulated-ARM column {'on' if r0['emulated'] else 'off'}. Load average "
             f"{summary['load_average_before'][0]:.2f} before, {summary['load_average_after'][0]:.2f} after; "
             f"CPU flags {' '.join(summary['host']['cpu_flags'])}.", "",
             f"Trained with 1 thread instead of {r0['training']['threads']} (`OMP_NUM_THREADS=1`, one more run): "
             f"teacher {summary['one_thread_run']['teacher_accuracy']:.2%}, student "
             f"{summary['one_thread_run']['student_accuracy']:.2%} ({summary['one_thread_run']['shipped']} shipped, "
             f"distilling {summary['one_thread_run']['distillation_gain'] * 100:+.2f} points): the same seed and data "
             "on other sums give other weights."]
    update_section("quickstart_e2e", "## Quickstart end to end", rows)

if __name__ == "__main__":
    main()
