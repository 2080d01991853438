"""Causal-LM student stage: the teacher with k of its blocks (by block influence on training prompts, or a fixed
rule), initialized from them, optionally with a narrower feed-forward."""

from __future__ import annotations

import random

from edgedistill.lm.chat import (
    block_influence,
    blocks_kept_by_kl,
    chat_ids,
    describe,
    layer_dropped,
    load_causal,
    mlp_importance,
    narrow_mlp,
    save_causal,
)
from edgedistill.pipeline.engine import StageResult
from edgedistill.stages.causal.teacher import load_prompts, teacher_folder

RANKING_PROMPTS = 32  # training prompts that rank blocks and neurons: a sample, so ranking takes seconds


def run(spec, ctx) -> StageResult:
    teacher, tokenizer = load_causal(teacher_folder(spec))
    training, _ = load_prompts(ctx)
    sample = random.Random(spec.seed).sample(training, min(len(training), RANKING_PROMPTS))
    sequences = [chat_ids(tokenizer, p.text) for p in sample]
    influence = None
    if spec.student.select == "importance":
        with ctx.console.status(f"  ranking the teacher's blocks on {len(sequences)} training prompts…"):
            influence = block_influence(teacher, sequences)
    by_kl = None
    if spec.student.select == "kl":
        by_kl = blocks_kept_by_kl(teacher, sequences, spec.student.layers, ctx.console)
    student, kept = layer_dropped(teacher, spec.student.layers, spec.student.select, influence, by_kl)
    if spec.student.intermediate is not None:
        with ctx.console.status(f"  ranking feed-forward neurons on {len(sequences)} training prompts…"):
            narrow_mlp(student, spec.student.intermediate, mlp_importance(student, sequences))
    outputs = save_causal(student, tokenizer, ctx.stage_dir("student") / "init")
    info = describe(student)
    metrics = {**info, "kept_layers": kept, "param_ratio": info["params"] / ctx.metrics("teacher")["params"],
               "block_influence": influence}
    ctx.console.print(f"  student {info['arch']} (teacher blocks {kept}): {info['params']:,} params "
                      f"({metrics['param_ratio']:.1%} of the teacher)")
    return StageResult(outputs=outputs, metrics=metrics)
