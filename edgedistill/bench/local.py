"""Local transport: the runner in a subprocess of this machine, pinned to the device's core count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).with_name("runner.py")


class BenchFailed(Exception):
    """The runner did not produce a measurement; the message says why in one line."""


def host_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def run_local(model: Path, data: Path | None, *, threads: int, warmup_runs: int, warmup_s: float, runs: int,
              min_time_s: float, timeout_s: float, providers: list[str] = ("CPUExecutionProvider",),
              seq_len: int | None = None) -> dict:
    """Run the benchmark runner on `model` with `threads` threads pinned to as many host cores
    (`seq_len`: tokens per input, for language models)."""
    cores = host_cores()[:threads]
    cmd = [sys.executable, str(RUNNER), "--model", str(model), "--threads", str(threads),
           "--cores", ",".join(map(str, cores)), "--warmup-runs", str(warmup_runs), "--warmup-s", str(warmup_s),
           "--runs", str(runs), "--min-time-s", str(min_time_s), "--providers", ",".join(providers)]
    if data is not None:
        cmd += ["--data", str(data)]
    if seq_len is not None:
        cmd += ["--seq-len", str(seq_len)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BenchFailed(f"runner timed out after {timeout_s:g} s") from None
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        tail = " ".join(proc.stderr.split()[-40:])
        raise BenchFailed(f"runner exited {proc.returncode} without a result: {tail}") from None
    if result.get("status") != "ok":
        raise BenchFailed(f"runner exited {proc.returncode}: {result.get('error')}")
    result["target"] = "local"
    return result
