"""`edgedistill report`: rebuild a run's report, or compare several runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from edgedistill.errors import UserError

FORMATS = ("json", "md", "html")


def report_command(
    runs: list[Path] = typer.Argument(..., help="A run folder; with --compare, two or more."),
    format: Optional[list[str]] = typer.Option(None, "--format", help="md, html or json (repeatable; default: all)."),
    compare: bool = typer.Option(False, "--compare", help="Put several runs side by side."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the comparison (default: runs/compare-<time>)."),
) -> None:
    """Rebuild the deployment report of a run folder, or compare runs (e.g. one pipeline on several devices)."""
    from edgedistill.errors import unknown_choice
    from edgedistill.fileio import atomic_write_text
    from edgedistill.pipeline.engine import load_run
    from edgedistill.report import write_report
    from edgedistill.report.results import build_results

    formats = format or list(FORMATS)
    for fmt in formats:
        if fmt not in FORMATS:
            raise UserError(f"--format: {unknown_choice('report format', fmt, FORMATS)}")
    if not compare:
        if len(runs) != 1:
            raise UserError(f"report: got {len(runs)} run folders; give one, or add --compare for several")
        outputs, _ = write_report(load_run(runs[0]), formats)
        for path in outputs.values():
            typer.echo(f"report: {path}")
        return
    if len(runs) < 2:
        raise UserError("--compare: needs two or more run folders")
    from edgedistill.report.compare import compare_rows, render_compare_html, render_compare_markdown

    loaded = [(str(run), build_results(load_run(run))) for run in runs]
    rows = compare_rows(loaded)
    out = out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    if "md" in formats:
        atomic_write_text(out / "compare.md", render_compare_markdown(rows))
    if "html" in formats:
        atomic_write_text(out / "compare.html", render_compare_html(rows, loaded))
    if "json" in formats:
        from edgedistill.fileio import atomic_write_json

        atomic_write_json(out / "compare.json", rows)
    typer.echo(f"comparison: {out}")
