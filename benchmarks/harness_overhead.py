"""How much the benchmark runner's own loop adds: its p50 against a bare timing loop over the same
runtime session (or interpreter), in the same process, same thread count, same inputs.

For each exported model of a finished run: `repeats` rounds, alternating the two, each timing `runs`
single-sample inferences after warm-up. Reports the median ratio runner/bare and the run-to-run
coefficient of variation of each. Writes benchmarks/results/harness_overhead.json and a README table.
Usage: python benchmarks/harness_overhead.py RUN_DIR [--repeats 7] [--runs 3000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from _readme import update_section

from edgedistill.bench import runner

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "harness_overhead.json"


def bare_p50(model: Path, x: np.ndarray, runs: int, warmup: int) -> float:
    """The same runtime loaded the same way, timed with nothing but perf_counter around each call."""
    infer, _, _ = runner.RUNTIMES[model.suffix](str(model), 1, ["CPUExecutionProvider"])
    samples = [x[i:i + 1] for i in range(len(x))]
    for i in range(warmup):
        infer(samples[i % len(samples)])
    times = []
    for i in range(runs):
        sample = samples[i % len(samples)]
        t0 = time.perf_counter()
        infer(sample)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def runner_p50(model: Path, data: Path, runs: int, warmup: int) -> float:
    args = argparse.Namespace(model=str(model), data=str(data), threads=1, cores="", warmup_runs=warmup, warmup_s=0,
                              runs=runs, min_time_s=0, save_outputs="", providers="CPUExecutionProvider")
    return runner.benchmark(args)["latency_ms"]["p50"]


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3000)
    args = parser.parse_args()
    import os

    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core for both loops
    data = args.run / "bench" / "test.npz"
    with np.load(data) as arrays:
        x = arrays["x"].astype(np.float32)
    rows = []
    for model in sorted((args.run / "export").glob("student-*.*")):
        ours, bare = [], []
        for _ in range(args.repeats):
            ours.append(runner_p50(model, data, args.runs, 300))
            bare.append(bare_p50(model, x, args.runs, 300))
        ratios = [o / b for o, b in zip(ours, bare)]
        rows.append({"model": model.name, "runner_p50_ms": statistics.median(ours),
                     "bare_p50_ms": statistics.median(bare),
                     "ratio": statistics.median(ratios), "runner_cv": cv(ours), "bare_cv": cv(bare)})
        print(f"{model.name:24s} runner {rows[-1]['runner_p50_ms']:.4f} ms  bare {rows[-1]['bare_p50_ms']:.4f} ms  "
              f"ratio {rows[-1]['ratio']:.3f}")
    summary = {"benchmark": "harness_overhead", "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
               "runs": args.runs, "threads": 1, "rows": rows}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"{args.repeats} alternating rounds of {args.runs} timed single-sample runs each, one thread, one core; "
             f"{summary['date']}.", "", "| model | runner p50 ms | bare loop p50 ms | runner / bare (median) | "
             "runner CV | bare CV |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['runner_p50_ms']:.4f} | {r['bare_p50_ms']:.4f} | {r['ratio']:.3f} | "
              f"{r['runner_cv']:.1%} | {r['bare_cv']:.1%} |" for r in rows]
    update_section("harness_overhead", "## Runner overhead\n\n`python benchmarks/harness_overhead.py RUN_DIR`: "
                   "the runner's p50 against a bare loop over the same session.", lines)

if __name__ == "__main__":
    main()
