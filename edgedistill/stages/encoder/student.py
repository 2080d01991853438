"""Encoder student stage: the teacher with only some of its layers, initialized from them, optionally
narrower (hidden size, feed-forward size)."""

from __future__ import annotations

import random

from edgedistill.lm.encoder import (
    describe,
    ffn_importance,
    layer_dropped_student,
    load_encoder,
    narrow_ffn,
    save_encoder,
)
from edgedistill.lm.text import load_texts
from edgedistill.pipeline.engine import StageResult
from edgedistill.stages.encoder.teacher import teacher_dir

IMPORTANCE_TEXTS = 512  # training sentences that rank the feed-forward neurons: a sample, so ranking takes seconds


def run(spec, ctx) -> StageResult:
    teacher, tokenizer = load_encoder(teacher_dir(spec))
    student, kept = layer_dropped_student(teacher, spec.student.layers, spec.student.select, spec.student.hidden)
    if spec.student.intermediate is not None:
        train = load_texts(spec.data, spec.seed).train
        sample = random.Random(spec.seed).sample(train, min(len(train), IMPORTANCE_TEXTS))
        with ctx.console.status(f"  ranking feed-forward neurons on {len(sample)} training sentences…"):
            importance = ffn_importance(student, tokenizer, sample, max_length=spec.distill.max_length)
        narrow_ffn(student, spec.student.intermediate, importance).train()
    out = ctx.stage_dir("student")
    outputs = save_encoder(student, tokenizer, out / "init")
    metrics = {**describe(student), "kept_layers": kept, "param_ratio": describe(student)["params"] /
               ctx.metrics("teacher")["params"]}
    ctx.console.print(f"  student {metrics['arch']} (teacher layers {kept}): {metrics['params']:,} params "
                      f"({metrics['param_ratio']:.1%} of the teacher)")
    return StageResult(outputs=outputs, metrics=metrics)
