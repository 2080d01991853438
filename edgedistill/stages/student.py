"""Student stage: build the student the pipeline names, for the teacher's input and classes."""

from __future__ import annotations

from edgedistill.distill.trainer import seed_everything
from edgedistill.errors import StageFailed
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
    inherited = None
    if cfg.init == "teacher":
        inherited = inherit(model, teacher_weights(ctx), "teacher", ctx.console)
    elif cfg.init == "pretrained":
        inherited = inherit(model, pretrained_weights(spec, teacher), "pretrained", ctx.console)
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


def teacher_weights(ctx) -> dict:
    """The weights the teacher stage saved (student.init: teacher)."""
    from safetensors.torch import load_file

    if "weights" not in ctx.record("teacher").outputs:
        raise StageFailed("student.init: teacher needs a teacher of a built-in family or a factory (its weights are "
                          "saved by the teacher stage); a teacher from another framework has none to give")
    return load_file(str(ctx.output("teacher", "weights")))


def pretrained_weights(spec, teacher: ArchInfo) -> dict:
    """The teacher's checkpoint as the file holds it, read into the teacher's architecture as the teacher stage
    reads it (student.init: pretrained); a head of another class count is left out, not copied at random."""
    from edgedistill.models.io import load_weights
    from edgedistill.stages.teacher import mismatched_head

    model = teacher.build()
    head, _ = mismatched_head(model, spec.teacher.path, teacher.num_classes)
    load_weights(model, spec.teacher.path, new_head=head)
    return {k: v for k, v in model.state_dict().items() if head is None or not k.startswith(f"{head}.")}


def inherit(model, source: dict, init: str, console) -> dict:
    """Copy in every tensor of `source` that the student has under the same name with the same shape, as
    DistilBERT starts from its teacher's layers: the same family at a smaller depth keeps the first blocks of each
    stage, and the blocks it drops are the ones skipped. Which tensors came across is recorded; a student that
    shares under half its values is an error, not a silent random start (a classifier's bias has the same shape in
    every family)."""
    own = model.state_dict()
    shared = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    copied = sum(v.numel() for v in shared.values())
    total = sum(v.numel() for v in own.values())
    if copied < total / 2:
        raise StageFailed(f"student.init: {init}: the student shares {copied / total:.1%} of its values (tensors of "
                          "the same name and shape) with the teacher, under half; use the teacher's family at a "
                          "smaller depth, or init: random")
    model.load_state_dict(shared, strict=False)
    whose = "the teacher's checkpoint" if init == "pretrained" else "the teacher"
    console.print(f"  student starts from {whose}: {len(shared)} of {len(own)} tensors "
                  f"({copied / total:.1%} of its values) copied in")
    return {"tensors": len(shared), "of": len(own), "share_of_values": copied / total, "source": whose}


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
