"""Teacher stage: train a teacher on the data, or load the one the pipeline names (a checkpoint of a family or
factory, or a Hugging Face, TorchScript, torch.export or ONNX model); a teacher whose classes are not the
data's gets a new head fitted on the data (teacher.finetune), or stops with one line saying so."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgedistill.data import load_dataset, spread_note
from edgedistill.distill import augment as augmentation
from edgedistill.distill.compute import resolve
from edgedistill.distill.trainer import accuracy, fit, predict, seed_everything
from edgedistill.errors import UserError
from edgedistill.models import FOREIGN_TEACHERS
from edgedistill.models.io import ArchInfo, by_position, load_weights, read_state_dict, save_weights
from edgedistill.models.teachers import (
    HeadOnlyTraining,
    attach_head,
    last_linear,
    load_foreign,
    output_width,
    parameter_count,
)
from edgedistill.pipeline.engine import StageResult


def run(spec, ctx) -> StageResult:
    cfg = spec.teacher
    data = load_dataset(spec.data, spec.seed)
    foreign = cfg.kind in FOREIGN_TEACHERS
    arch = ArchInfo(cfg.kind if foreign else cfg.family, getattr(cfg, "width", 1.0), getattr(cfg, "depth", 1.0),
                    data.input_shape[0], data.num_classes, tuple(data.input_shape[1:]), data.class_names)
    seed_everything(spec.seed)
    out = ctx.stage_dir("teacher")
    compute = resolve(spec.train.device, spec.train.precision)
    metrics: dict = {"family": arch.family, "width": arch.width, "depth": arch.depth, "source": cfg.kind}
    outputs = {"arch": out / "arch.json"}
    head = None
    if foreign:
        model = load_foreign(cfg.kind, cfg.path)
        metrics.update(path=str(cfg.path), arch=f"{cfg.kind} model {cfg.path.name}")  # the report's name for it
        width = output_width(model, torch.from_numpy(np.ascontiguousarray(data.train.x[:2])))
        if width != data.num_classes:
            require_finetune(cfg, width, data.num_classes)
            model, head = attach_head(model, width, data.num_classes)
    else:
        model = arch.build()
        if cfg.kind == "checkpoint":
            head, width = mismatched_head(model, cfg.path, data.num_classes)
            if head is not None:
                require_finetune(cfg, width, data.num_classes)
            key = load_weights(model, cfg.path, new_head=head)
            metrics["checkpoint"] = str(cfg.path) + (f" (weights under {key!r})" if key else "")
            if key:
                ctx.console.print(f"  teacher weights read from the checkpoint's {key!r} entry")
        else:
            result = fit(model, data.train, data.val, cross_entropy, cfg, seed=spec.seed, label="teacher",
                         console=ctx.console, state_path=out / f"train-state-{ctx.inputs_digest[:12]}.pt",
                         augment=augmentation.build(cfg.augment), compute=compute)
            metrics.update(best_epoch=result.best_epoch, history=result.history, compute=compute.describe())
    if head is not None:
        metrics["finetune"] = finetune_head(model, head, data, cfg.finetune, spec, ctx, compute)
        outputs["head"] = out / "head.safetensors"
        save_weights(model.get_submodule(head), outputs["head"])
    metrics["floor"] = accuracy_floor(data.test.y, data.class_names)
    note = spread_note(spec.data, data)
    if note:
        metrics["data_notes"] = [note]
        ctx.console.print(f"  note: {note}")
    metrics["params"] = parameter_count(model)
    metrics["val_accuracy"] = accuracy(predict(model, data.val.x), data.val.y)
    metrics["accuracy"] = accuracy(predict(model, data.test.x), data.test.y)
    ctx.console.print(f"  teacher {arch.family}" + ("" if foreign else f" ×{arch.width}")
                      + f": {metrics['params']:,} params, test accuracy {metrics['accuracy']:.2%}")
    if not foreign:
        outputs["weights"] = out / "model.safetensors"
        save_weights(model, outputs["weights"])
    arch.save(outputs["arch"])
    return StageResult(outputs=outputs, metrics=metrics)


def accuracy_floor(labels: np.ndarray, class_names: list[str]) -> dict:
    """What a model that learned nothing scores on the test split: a uniform guess (1 / classes) and always
    answering the most frequent class (its share). A verdict never says "fits" at or below the larger."""
    counts = np.bincount(labels, minlength=len(class_names))
    top = int(counts.argmax())
    return {"chance": 1 / len(class_names), "majority_class": class_names[top],
            "majority_share": float(counts[top] / max(len(labels), 1))}


def cross_entropy(x, logits, y, idx, epoch):
    return F.cross_entropy(logits, y)


def mismatched_head(model, path, num_classes: int) -> tuple[str | None, int]:
    """(the model's classifier path, the checkpoint's class count) when the checkpoint's classifier has another
    class count than the data; (None, num_classes) when it fits."""
    head = last_linear(model, num_classes)
    if head is None:
        return None, num_classes
    state = {k.removeprefix("module."): v for k, v in read_state_dict(path).items()}
    expected = model.state_dict()
    if state and not set(state) & set(expected):  # a release with its own layer names: as load_weights reads it
        state = by_position(state, expected, path, new_head=head)
    weight = state.get(f"{head}.weight")
    if weight is None or weight.ndim != 2 or weight.shape[0] == num_classes:
        return None, num_classes
    return head, int(weight.shape[0])


def require_finetune(cfg, given: int, num_classes: int) -> None:
    if cfg.finetune is None:
        raise UserError(f"{cfg.path}: teacher: its head gives {given} classes and the data has {num_classes}: add "
                        "teacher.finetune: {epochs: 5} to fit a new head on the data (the rest of the teacher "
                        "frozen), or give a teacher trained on these classes")


def finetune_head(model, head: str, data, cfg, spec, ctx, compute) -> dict:
    """Fit the new head on the data: alone with the rest of the teacher frozen (and in eval mode), or with every
    layer (`scope: whole`), resuming from the stage's training state when a run was cut."""
    whole = cfg.scope == "whole"
    trainable = model if whole else HeadOnlyTraining(model, head)
    state = ctx.stage_dir("teacher") / f"finetune-state-{ctx.inputs_digest[:12]}.pt" if whole else None
    result = fit(trainable, data.train, data.val, cross_entropy, cfg, seed=spec.seed,
                 label="teacher fine-tune" if whole else "teacher head", console=ctx.console, state_path=state,
                 augment=augmentation.build(cfg.augment), compute=compute)
    what = "with the whole network" if whole else "with the rest frozen"
    ctx.console.print(f"  teacher's new head ({head}, {data.num_classes} classes) fitted {what} for {cfg.epochs} "
                      f"epochs: validation accuracy {result.best_val_accuracy:.2%}")
    trained = model if whole else model.get_submodule(head)
    return {"head": head, "scope": cfg.scope, "epochs": cfg.epochs, "best_epoch": result.best_epoch,
            "val_accuracy": result.best_val_accuracy, "history": result.history,
            "trainable_params": sum(p.numel() for p in trained.parameters())}
