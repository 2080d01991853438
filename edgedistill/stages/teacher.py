"""Teacher stage: train a teacher on the data, or load the checkpoint the pipeline names."""

from __future__ import annotations

import torch.nn.functional as F

from edgedistill.data import load_dataset
from edgedistill.distill import augment as augmentation
from edgedistill.distill.compute import resolve
from edgedistill.distill.trainer import accuracy, fit, predict, seed_everything
from edgedistill.models import count_params
from edgedistill.models.io import ArchInfo, load_weights, save_weights
from edgedistill.pipeline.engine import StageResult


def run(spec, ctx) -> StageResult:
    cfg = spec.teacher
    data = load_dataset(spec.data, spec.seed)
    arch = ArchInfo(cfg.family, cfg.width, cfg.depth, data.input_shape[0], data.num_classes,
                    tuple(data.input_shape[1:]), data.class_names)
    seed_everything(spec.seed)
    model = arch.build()
    metrics: dict = {"family": cfg.family, "width": cfg.width, "depth": cfg.depth, "params": count_params(model),
                     "source": cfg.kind}
    out = ctx.stage_dir("teacher")
    if cfg.kind == "checkpoint":
        key = load_weights(model, cfg.path)
        metrics["checkpoint"] = str(cfg.path) + (f" (weights under {key!r})" if key else "")
        if key:
            ctx.console.print(f"  teacher weights read from the checkpoint's {key!r} entry")
    else:
        compute = resolve(spec.train.device, spec.train.precision)
        result = fit(model, data.train, data.val, lambda x, logits, y, idx, epoch: F.cross_entropy(logits, y), cfg,
                     seed=spec.seed, label="teacher", console=ctx.console,
                     state_path=out / f"train-state-{ctx.inputs_digest[:12]}.pt",
                     augment=augmentation.build(cfg.augment), compute=compute)
        metrics.update(best_epoch=result.best_epoch, history=result.history, compute=compute.describe())
    metrics["val_accuracy"] = accuracy(predict(model, data.val.x), data.val.y)
    metrics["accuracy"] = accuracy(predict(model, data.test.x), data.test.y)
    ctx.console.print(f"  teacher {cfg.family} ×{cfg.width}: {metrics['params']:,} params, "
                      f"test accuracy {metrics['accuracy']:.2%}")
    save_weights(model, out / "model.safetensors")
    arch.save(out / "arch.json")
    return StageResult(outputs={"weights": out / "model.safetensors", "arch": out / "arch.json"}, metrics=metrics)
