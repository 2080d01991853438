"""Several runs side by side (the same pipeline on several devices, or several pipelines)."""

from __future__ import annotations

from pathlib import Path

from edgedistill.report.html import CSS, e, figure_block, html_table
from edgedistill.report.markdown import _escape as escape_cell  # the same package: one rule for table cells
from edgedistill.report.text import pct, verdict_word


def _best(results: dict) -> dict | None:
    name = results["verdict"].get("artifact")
    return next((a for a in results["artifacts"] if f"{a['format']} {a['precision']}" == name), None)


def compare_rows(runs: list[tuple[str, dict]]) -> list[dict]:
    rows = []
    for label, r in runs:
        best = _best(r) or {}
        lat = best.get("latency_ms") or {}
        rows.append({"run": label, "pipeline": r["pipeline"], "device": r["device"]["name"],
                     "fits": r["verdict"]["fits"], "verdict": verdict_word(r["verdict"]).lower(),
                     "summary": r["verdict"]["summary"],
                     "artifact": r["verdict"].get("artifact"), "bytes": best.get("bytes"),
                     "accuracy": best.get("accuracy"), "p90_ms": lat.get("p90"),
                     "teacher_accuracy": (r.get("teacher") or {}).get("accuracy")})
    return rows


def render_compare_markdown(rows: list[dict]) -> str:
    lines = ["# Runs compared", "", "| run | pipeline | device | verdict | artifact | size KiB | accuracy | p90 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = r["verdict"]
        size = "—" if r["bytes"] is None else f"{r['bytes'] / 1024:.1f}"
        p90 = "—" if r["p90_ms"] is None else f"{r['p90_ms']:.3f}"
        cells = [r["run"], r["pipeline"], r["device"], verdict, r["artifact"] or "—", size, pct(r["accuracy"]), p90]
        lines.append("| " + " | ".join(escape_cell(c) for c in cells) + " |")  # a folder name may hold a newline
    return "\n".join(lines) + "\n"


def render_compare_html(rows: list[dict], runs: list[tuple[str, dict]]) -> str:
    from edgedistill.report import figures

    table = html_table(["run", "pipeline", "device", "verdict", "artifact", "size", "accuracy", "p90 ms"], [
        [e(r["run"]), e(r["pipeline"]), e(r["device"]),
         e(r["verdict"]) + f"<br><span class=muted>"
         f"{e(r['summary'])}</span>", e(r["artifact"]),
         e(None if r["bytes"] is None else f"{r['bytes'] / 1024:.1f} KiB"),
         e(pct(r["accuracy"])), e(None if r["p90_ms"] is None else f"{r['p90_ms']:.3f}")] for r in rows])
    # One chart over every run's artifacts, labelled by run.
    # Labelled by the run folder's name (its full path is in the table above), not by the whole path.
    merged = {"artifacts": [{**a, "format": a["format"], "precision": f"{a['precision']} [{Path(label).name}]"}
                            for label, r in runs for a in r["artifacts"]],
              "budgets": {}, "teacher": None}
    chart = figure_block(figures.accuracy_latency(merged), "Every run's artifacts: accuracy against p90 latency.",
                    "No run has benchmarked artifacts.")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Runs compared</title>"
            f"<style>{CSS}</style></head><body><h1>Runs compared</h1><section id=\"runs\">{table}</section>"
            f"<section id=\"figures\">{chart}</section></body></html>\n")
