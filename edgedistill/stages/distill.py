"""Distill stage: soft-label KD from the teacher into the student, best validation checkpoint kept."""

from __future__ import annotations

import torch

from edgedistill.data import load_dataset
from edgedistill.distill.losses import soft_label_kd
from edgedistill.distill.trainer import accuracy, fit, predict
from edgedistill.models.io import ArchInfo, load_weights, save_weights
from edgedistill.pipeline.engine import StageResult


def run(spec, ctx) -> StageResult:
    cfg = spec.distill
    data = load_dataset(spec.data, spec.seed)
    teacher = ArchInfo.load(ctx.output("teacher", "arch")).build()
    load_weights(teacher, ctx.output("teacher", "weights"))
    student_arch = ArchInfo.load(ctx.output("student", "arch"))
    student = student_arch.build()
    load_weights(student, ctx.output("student", "weights"))
    # No augmentation, so the teacher's logits on the training set are fixed: compute them once.
    teacher_logits = torch.from_numpy(predict(teacher, data.train.x))

    def loss_fn(logits, labels, idx):
        return soft_label_kd(logits, teacher_logits[idx], labels, cfg.temperature, cfg.alpha)

    out = ctx.stage_dir("distill")
    result = fit(student, data.train, data.val, loss_fn, cfg, seed=spec.seed, label="distill", console=ctx.console,
                 state_path=out / f"train-state-{ctx.inputs_digest[:12]}.pt")
    save_weights(student, out / "best.safetensors")
    test_acc = accuracy(predict(student, data.test.x), data.test.y)
    ctx.console.print(f"  student test accuracy {test_acc:.2%} (best epoch {result.best_epoch}"
                      + (f", resumed after epoch {result.resumed_from_epoch}" if result.resumed_from_epoch else "")
                      + ")")
    return StageResult(outputs={"weights": out / "best.safetensors"},
                       metrics={"accuracy": test_acc, "val_accuracy": result.best_val_accuracy,
                                "best_epoch": result.best_epoch, "epochs": cfg.epochs,
                                "temperature": cfg.temperature, "alpha": cfg.alpha,
                                "resumed_from_epoch": result.resumed_from_epoch, "history": result.history})
