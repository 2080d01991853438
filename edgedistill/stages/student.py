"""Student stage: build the student the pipeline names, for the teacher's input and classes."""

from __future__ import annotations

from edgedistill.distill.trainer import seed_everything
from edgedistill.models import count_params
from edgedistill.models.io import ArchInfo, pipeline_families, save_weights
from edgedistill.pipeline.engine import StageResult


def run(spec, ctx) -> StageResult:
    cfg = spec.student
    teacher = ArchInfo.load(ctx.output("teacher", "arch"), pipeline_families(spec))
    width, depth, selection = cfg.width, cfg.depth, None
    if cfg.size == "auto":
        selection = choose(spec, ctx)
        width, depth = selection["chosen"]["width"], selection["chosen"]["depth"]
    arch = ArchInfo(cfg.family, width, depth, teacher.in_channels, teacher.num_classes, teacher.input_hw,
                    teacher.class_names)
    seed_everything(spec.seed)
    model = arch.build()
    params = count_params(model)
    teacher_params = ctx.metrics("teacher")["params"]
    out = ctx.stage_dir("student")
    save_weights(model, out / "init.safetensors")
    arch.save(out / "arch.json")
    ratio = params / teacher_params
    ctx.console.print(f"  student {cfg.family} ×{width:g} depth ×{depth:g}: {params:,} params "
                      f"({ratio:.1%} of the teacher)")
    metrics = {"family": cfg.family, "width": width, "depth": depth, "params": params, "param_ratio": ratio}
    if selection is not None:
        metrics["selection"] = selection
    return StageResult(outputs={"weights": out / "init.safetensors", "arch": out / "arch.json"}, metrics=metrics)


def choose(spec, ctx) -> dict:
    """The candidate that fits the device's budgets and best meets student.objective (edgedistill select), as
    a dict for the report."""
    from edgedistill.config.device import device_path
    from edgedistill.latency.select import nothing_fits, predictor_note, select_for_pipeline

    selection, calibration = select_for_pipeline(spec, ctx.device, device_path(spec.device), ctx.budgets)
    if selection.chosen is None:
        raise nothing_fits(selection)
    c = selection.chosen
    ctx.console.print(f"  size auto on {selection.device}: {c.label} chosen of {len(selection.candidates)} candidates "
                      f"(predicted p90 {c.p90_ms:.3g} ms as {selection.format} {selection.precision}, "
                      f"{selection.predictor} predictor)")
    return {**selection.to_dict(), "predictor_note": predictor_note(selection, calibration)}
