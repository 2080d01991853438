"""Local transport: the runner in a subprocess of this machine, pinned to the device's core count.

Also what both transports share: a subprocess whose output is read with a bound (a device that floods
stdout is stopped, not buffered), and the check of the runner's answer before any figure of it is believed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

RUNNER = Path(__file__).with_name("runner.py")
# The runner's JSON is tens of kB (at most 1,000 latency samples); anything near this bound is not a result.
MAX_STDOUT_BYTES = 4 << 20
MAX_STDERR_BYTES = 64 << 10  # only its tail is ever shown


class BenchFailed(Exception):
    """The runner did not produce a measurement; the message says why in one line."""


def host_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def run_bounded(cmd: list[str], *, timeout_s: float, stdin: bytes | None = None, what: str = "runner",
                max_stdout: int = MAX_STDOUT_BYTES) -> tuple[int, bytes, bytes]:
    """Run `cmd`; its exit code, stdout and the tail of its stderr. BenchFailed when it runs past `timeout_s`
    or prints more than `max_stdout` bytes (the process is killed at once, before it can fill memory)."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err, flooded = bytearray(), bytearray(), threading.Event()

    def drain(stream, buffer: bytearray, limit: int, keep_tail: bool) -> None:
        for chunk in iter(lambda: stream.read1(1 << 16), b""):
            buffer += chunk
            if len(buffer) > limit:
                if not keep_tail:
                    flooded.set()
                    proc.kill()
                    return
                del buffer[:len(buffer) - limit]

    def feed() -> None:
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # the process went away; its exit code says why

    threads = [threading.Thread(target=drain, args=(proc.stdout, out, max_stdout, False), daemon=True),
               threading.Thread(target=drain, args=(proc.stderr, err, MAX_STDERR_BYTES, True), daemon=True)]
    if stdin is not None:
        threads.append(threading.Thread(target=feed, daemon=True))
    for thread in threads:
        thread.start()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise BenchFailed(f"{what} timed out after {timeout_s:g} s") from None
    for thread in threads:
        thread.join(timeout=5)
    if flooded.is_set():
        raise BenchFailed(f"{what} printed more than {max_stdout >> 20} MB; stopped (a runner's result is a few kB)")
    return code, bytes(out), bytes(err)


def _finite(value, low: float = 0.0, high: float = math.inf) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and low <= value <= high


def check_result(result: object) -> dict:
    """The runner's answer, if every figure in it is believable; BenchFailed naming the first bad field.

    A device (or whatever answers in its place) may send anything: an accuracy of 7.5, a NaN p90, a string.
    """
    if not isinstance(result, dict):
        raise BenchFailed(f"the runner's answer is a {type(result).__name__}, not a JSON object")
    if result.get("status") != "ok":
        raise BenchFailed(f"runner exited {result.get('exit_code')}: {str(result.get('error'))[:500]}")
    latency = result.get("latency_ms")
    if not isinstance(latency, dict):
        raise BenchFailed("the runner's answer has no latency_ms")
    checks = {f"latency_ms.{k}": latency.get(k) for k in ("p50", "p90", "p99", "mean", "std", "min", "max")}
    checks.update(peak_rss_mb=result.get("peak_rss_mb"), init_ms=result.get("init_ms"))
    for field, value in checks.items():
        if not _finite(value):
            raise BenchFailed(f"the runner's {field} is {value!r}; expected a finite number >= 0")
    if not (latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]):
        raise BenchFailed(f"the runner's latency percentiles are out of order: {latency}")
    if not (isinstance(latency.get("count"), int) and latency["count"] >= 1):
        raise BenchFailed(f"the runner's latency_ms.count is {latency.get('count')!r}; expected an integer >= 1")
    if result.get("accuracy") is not None and not _finite(result["accuracy"], 0.0, 1.0):
        raise BenchFailed(f"the runner's accuracy is {result['accuracy']!r}; expected a number in 0..1")
    samples = result.get("samples_ms", [])
    if not isinstance(samples, list) or len(samples) > 10_000 or not all(_finite(s) for s in samples):
        raise BenchFailed("the runner's samples_ms is not a list of at most 10,000 finite numbers >= 0")
    for key in ("runtime", "device"):
        if not isinstance(result.get(key), dict):
            raise BenchFailed(f"the runner's {key} is {type(result.get(key)).__name__}; expected an object")
    return result


def last_json_line(stdout: bytes) -> object | None:
    """The runner's answer: the JSON on its last line of output, or None when there is none."""
    lines = stdout.decode(errors="replace").strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (json.JSONDecodeError, IndexError, RecursionError):
        return None


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
    code, out, err = run_bounded(cmd, timeout_s=timeout_s)
    answer = last_json_line(out)
    if answer is None:
        tail = " ".join(err.decode(errors="replace").split()[-40:])
        raise BenchFailed(f"runner exited {code} without a result: {tail}")
    result = check_result(answer)
    result["target"] = "local"
    return result
