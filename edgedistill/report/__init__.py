"""Deployment reports: results.json (versioned schema), report.md and report.html, from a run directory."""

from __future__ import annotations

from pathlib import Path

from edgedistill.fileio import atomic_write_json, atomic_write_text

FILES = {"json": "results.json", "md": "report.md", "html": "report.html"}


def write_report(ctx, formats: list[str], folder: Path | None = None) -> tuple[dict[str, Path], dict]:
    """Write the run's report in `formats` into `folder` (default: the run's report/); return paths, results."""
    from edgedistill.report.results import build_results

    folder = folder or ctx.stage_dir("report")
    results = build_results(ctx)
    outputs = {}
    for fmt in formats:
        path = folder / FILES[fmt]
        if fmt == "json":
            atomic_write_json(path, results)
        elif fmt == "md":
            from edgedistill.report.markdown import render_markdown

            atomic_write_text(path, render_markdown(results))
        else:
            from edgedistill.report.html import render_html

            atomic_write_text(path, render_html(results))
        outputs[fmt] = path
    return outputs, results
