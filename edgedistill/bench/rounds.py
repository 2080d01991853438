"""Timing several artifacts in interleaved rounds, keeping each one's quietest round.

On a shared machine a burst of someone else's work can double a millisecond model's p50 for a while. A burst
rarely covers the same artifact in every round, so the round with the lowest p50 is the artifact's own cost;
and artifacts compared with each other are timed side by side, not minutes apart.
"""

from __future__ import annotations

from collections.abc import Callable


def interleaved(jobs: list[Callable[[], dict]], rounds: int,
                on_step: Callable[[int, int], None] = lambda job, round_index: None) -> list[list[dict]]:
    """Runs every job once per round, in turn (all of them, then all again); each job's results in round order.
    A job returns a runner result (latency_ms.p50, ...); on_step(job index, round index) is called before each."""
    results: list[list[dict]] = [[] for _ in jobs]
    for round_index in range(rounds):
        for index, job in enumerate(jobs):
            on_step(index, round_index)
            results[index].append(job())
    return results


def quietest(runs: list[dict]) -> dict:
    """The run with the lowest p50."""
    return min(runs, key=lambda result: result["latency_ms"]["p50"])


def summary(runs: list[dict]) -> dict:
    """One artifact's rounds as a record: the quietest round's p50 and p90, every round's p50, and the most
    memory any round needed."""
    best = quietest(runs)
    return {"p50_ms": best["latency_ms"]["p50"], "p90_ms": best["latency_ms"]["p90"],
            "p50_rounds_ms": [result["latency_ms"]["p50"] for result in runs],
            "peak_rss_mb": max(result["peak_rss_mb"] for result in runs)}
