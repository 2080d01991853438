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
    inherited = inherit_from_teacher(model, ctx) if cfg.init == "teacher" else None
    params = count_params(model)
    teacher_params = ctx.metrics("teacher")["params"]
    out = ctx.stage_dir("student")
    save_weights(model, out / "init.safetensors")
    arch.save(out / "arch.json")
    ratio = params / teacher_params
    ctx.console.print(f"  student {cfg.family} ×{width:g} depth ×{depth:g}: {params:,} params "
                      f"({ratio:.1%} of the teacher)")
    metrics = {"family": cfg.family, "width": width, "depth": depth, "params": params, "param_ratio": ratio,
               "init": cfg.init}
    if inherited is not None:
        metrics["inherited"] = inherited
    if selection is not None:
        metrics["selection"] = selection
    return StageResult(outputs={"weights": out / "init.safetensors", "arch": out / "arch.json"}, metrics=metrics)


def inherit_from_teacher(model, ctx) -> dict:
    """student.init: teacher. Copy in every tensor of the teacher's saved weights that the student has under the
    same name with the same shape, as DistilBERT starts from its teacher's layers: the same family at a smaller
    depth keeps the first blocks of each stage, and the blocks it drops are the ones skipped. Which tensors came
    across is recorded; a student that shares under half its values is an error, not a silent random start (a
    classifier's bias has the same shape in every family)."""
    from safetensors.torch import load_file

    from edgedistill.errors import StageFailed

    if "weights" not in ctx.record("teacher").outputs:
        raise StageFailed("student.init: teacher needs a teacher of a built-in family or a factory (its weights are "
                          "saved by the teacher stage); a teacher from another framework has none to give")
    teacher = load_file(str(ctx.output("teacher", "weights")))
    own = model.state_dict()
    shared = {k: v for k, v in teacher.items() if k in own and own[k].shape == v.shape}
    copied = sum(v.numel() for v in shared.values())
    total = sum(v.numel() for v in own.values())
    if copied < total / 2:
        raise StageFailed(f"student.init: teacher: the student shares {copied / total:.1%} of its values (tensors of "
                          "the same name and shape) with the teacher, under half; use the teacher's family at a "
                          "smaller depth, or init: random")
    model.load_state_dict(shared, strict=False)
    ctx.console.print(f"  student starts from the teacher: {len(shared)} of {len(own)} tensors "
                      f"({copied / total:.1%} of its values) copied in")
    return {"tensors": len(shared), "of": len(own), "share_of_values": copied / total}


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
    return {**selection.to_dict(), "predictor_note": predictor_note(selection, calibration, ctx.device)}
