"""Report stage: results.json and report.md from whatever the run holds; runs even after a failure."""

from __future__ import annotations

from edgedistill.fileio import atomic_write_json, atomic_write_text
from edgedistill.pipeline.engine import StageResult
from edgedistill.report.markdown import render_markdown
from edgedistill.report.results import build_results


def run(spec, ctx) -> StageResult:
    out = ctx.stage_dir("report")
    results = build_results(ctx)
    outputs = {}
    if "json" in spec.report.formats:
        atomic_write_json(out / "results.json", results)
        outputs["json"] = out / "results.json"
    if "md" in spec.report.formats:
        atomic_write_text(out / "report.md", render_markdown(results))
        outputs["md"] = out / "report.md"
    return StageResult(outputs=outputs, metrics={"fits": results["verdict"]["fits"]})
