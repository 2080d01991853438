"""Encoder distill stage: the student learns the teacher's sentence embeddings (and, if asked, hidden
states and last-layer attention) on the training sentences."""

from __future__ import annotations

import numpy as np
import torch

from edgedistill.distill.compute import resolve
from edgedistill.lm.distill import EncoderDistillConfig, distill_encoder, encoder_agreement
from edgedistill.lm.encoder import embed, load_encoder, save_encoder
from edgedistill.lm.text import load_texts
from edgedistill.pipeline.engine import StageResult
from edgedistill.stages.encoder.teacher import teacher_dir


def run(spec, ctx) -> StageResult:
    cfg = spec.distill
    teacher, tokenizer = load_encoder(teacher_dir(spec))
    student, _ = load_encoder(ctx.output("student", "config").parent)
    texts = load_texts(spec.data, spec.seed)
    reference = torch.from_numpy(np.load(ctx.output("teacher", "test_embeddings")))

    def held_out() -> dict:
        return encoder_agreement(embed(student, tokenizer, texts.test, max_length=cfg.max_length), reference)

    before = held_out()
    state = ctx.stage_dir("distill") / f"train-state-{ctx.inputs_digest[:12]}.pt"
    run = distill_encoder(student, teacher, tokenizer, texts.train, ctx.metrics("student")["kept_layers"],
                          EncoderDistillConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                               max_length=cfg.max_length, embedding_weight=cfg.embedding_weight,
                                               hidden_weight=cfg.hidden_weight, hidden_loss=cfg.hidden_loss,
                                               attention_weight=cfg.attention_weight),
                          seed=spec.seed, console=ctx.console, evaluate=lambda: held_out()["mean_cosine"],
                          state_path=state, compute=resolve(spec.train.device, spec.train.precision))
    if run.resumed_from_epoch:
        ctx.console.print(f"  resumed after epoch {run.resumed_from_epoch} of {cfg.epochs}")
    after = held_out()
    outputs = save_encoder(student, tokenizer, ctx.stage_dir("distill") / "model")
    state.unlink(missing_ok=True)  # weights and optimizer moments: three times the model, no longer needed
    ctx.console.print(f"  held-out mean cosine to the teacher {before['mean_cosine']:.4f} → "
                      f"{after['mean_cosine']:.4f}, "
                      f"top-10 neighbour overlap {before['neighbour_overlap']:.1%} → {after['neighbour_overlap']:.1%}")
    terms = [name for name, weight in (("embedding", cfg.embedding_weight), ("hidden", cfg.hidden_weight),
                                       ("attention", cfg.attention_weight)) if weight > 0]
    return StageResult(outputs=outputs, metrics={
        "accuracy": after["mean_cosine"], "neighbour_overlap": after["neighbour_overlap"], "undistilled": before,
        "epochs": cfg.epochs, "terms": terms, "history": run.history, "seconds": round(run.seconds, 3),
        "teacher_cache": "memory" if terms == ["embedding"] else "off"})
