"""One thin module per stage; the order of a pipeline run is `default_stages(spec)`."""

from __future__ import annotations


def default_stages(spec=None):
    """The stages of `spec`'s kind of pipeline: image classification, or a sentence encoder (data.kind text)."""
    from edgedistill.pipeline.engine import Stage
    from edgedistill.stages import bench, distill, export, report, student, teacher

    if spec is not None and spec.data.kind == "text":
        from edgedistill.stages.encoder import distill, export, student, teacher  # noqa: F811 - same roles
    return [
        Stage("teacher", teacher.run, ("data", "teacher")),
        Stage("student", student.run, ("data", "student"), after=("teacher",)),
        Stage("distill", distill.run, ("data", "distill"), after=("teacher", "student")),
        Stage("export", export.run, ("data", "export"), after=("distill",)),
        Stage("bench", bench.run, ("data", "export", "bench", "device"), after=("export",)),
        Stage("report", report.run, ("budgets", "report", "device"), after=("teacher", "distill", "export", "bench"),
              always=True),
    ]
