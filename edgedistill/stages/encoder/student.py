"""Encoder student stage: the teacher with only some of its layers, initialized from them."""

from __future__ import annotations

from edgedistill.lm.encoder import describe, layer_dropped_student, load_encoder, save_encoder
from edgedistill.pipeline.engine import StageResult
from edgedistill.stages.encoder.teacher import teacher_dir


def run(spec, ctx) -> StageResult:
    teacher, tokenizer = load_encoder(teacher_dir(spec))
    student, kept = layer_dropped_student(teacher, spec.student.layers, spec.student.select, spec.student.hidden)
    out = ctx.stage_dir("student")
    outputs = save_encoder(student, tokenizer, out / "init")
    metrics = {**describe(student), "kept_layers": kept, "param_ratio": describe(student)["params"] /
               ctx.metrics("teacher")["params"]}
    ctx.console.print(f"  student {metrics['arch']} (teacher layers {kept}): {metrics['params']:,} params "
                      f"({metrics['param_ratio']:.1%} of the teacher)")
    return StageResult(outputs=outputs, metrics=metrics)
