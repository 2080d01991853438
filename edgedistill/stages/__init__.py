"""One thin module per stage; the order of a pipeline run is `default_stages(spec)`."""

from __future__ import annotations


def default_stages(spec=None):
    """The stages of `spec`'s kind of pipeline: image classification, or a kind of config.PIPELINE_KINDS, whose
    stages package replaces the stages it has."""
    import importlib

    from edgedistill.config.pipeline import PIPELINE_KINDS
    from edgedistill.pipeline.engine import Stage
    from edgedistill.stages import bench, distill, export, report, student, teacher

    run = {"teacher": teacher.run, "student": student.run, "distill": distill.run, "export": export.run,
           "bench": bench.run}
    if spec is not None and spec.data.kind in PIPELINE_KINDS:
        package = PIPELINE_KINDS[spec.data.kind][2]
        for name in run:
            try:
                run[name] = importlib.import_module(f"{package}.{name}").run
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
    return [
        Stage("teacher", run["teacher"], ("data", "teacher")),
        Stage("student", run["student"], ("data", "student"), after=("teacher",)),
        Stage("distill", run["distill"], ("data", "distill"), after=("teacher", "student")),
        Stage("export", run["export"], ("data", "export"), after=("distill",)),
        Stage("bench", run["bench"], ("data", "export", "bench", "device"), after=("export",)),
        Stage("report", report.run, ("budgets", "report", "device"), after=("teacher", "distill", "export", "bench"),
              always=True),
    ]
