"""Report stage: results.json, report.md and report.html from whatever the run holds; runs even after a failure."""

from __future__ import annotations

from edgedistill.pipeline.engine import StageResult
from edgedistill.report import write_report


def run(spec, ctx) -> StageResult:
    outputs, results = write_report(ctx, spec.report.formats)
    return StageResult(outputs=outputs, metrics={"fits": results["verdict"]["fits"]})
