"""One thin module per stage; the default order of a pipeline run is `default_stages()`."""

from __future__ import annotations


def default_stages():
    from edgedistill.pipeline.engine import Stage
    from edgedistill.stages import bench, distill, export, report, student, teacher

    return [
        Stage("teacher", teacher.run, ("data", "teacher")),
        Stage("student", student.run, ("data", "student"), after=("teacher",)),
        Stage("distill", distill.run, ("data", "distill"), after=("teacher", "student")),
        Stage("export", export.run, ("data", "export"), after=("distill",)),
        Stage("bench", bench.run, ("data", "bench", "device"), after=("export",)),
        Stage("report", report.run, ("budgets", "report", "device"), after=("teacher", "distill", "export", "bench"),
              always=True),
    ]
