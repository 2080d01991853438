"""The training loop shared by teacher training and distillation.

Validation every epoch keeps the best weights; a checkpoint of the training state after every epoch
lets an interrupted run continue from its last finished epoch instead of starting over.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edgedistill.data import Split
from edgedistill.errors import StageFailed
from edgedistill.fileio import atomic_target

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels, indices)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class FitResult:
    best_state: dict
    best_epoch: int
    best_val_accuracy: float
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0


@torch.no_grad()
def predict(model: torch.nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Logits for `x` in eval mode, as a numpy array."""
    model.eval()
    outs = [model(torch.from_numpy(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(outs).numpy()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay,
                               nesterov=True)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit(model: torch.nn.Module, train: Split, val: Split, loss_fn: LossFn, cfg, *, seed: int, label: str,
        console: Console, state_path: Path | None = None) -> FitResult:
    """Train `model` for cfg.epochs with cosine LR; keep the weights with the best validation accuracy.

    `state_path`, when given, holds the training state after each epoch; an existing one is resumed.
    """
    seed_everything(seed)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    result = FitResult(best_state={k: v.clone() for k, v in model.state_dict().items()}, best_epoch=0,
                       best_val_accuracy=-1.0)
    start_epoch = _resume(state_path, model, optimizer, scheduler, result) if state_path else 0
    x_train, y_train = torch.from_numpy(train.x), torch.from_numpy(train.y)
    steps = math.ceil(len(train) / cfg.batch_size)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(start_epoch):  # replay the shuffles of finished epochs so a resumed run sees the same order
        torch.randperm(len(train), generator=generator)
    with _progress(console) as progress:
        task = progress.add_task(label, total=cfg.epochs * steps, completed=start_epoch * steps, info="")
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            order = torch.randperm(len(train), generator=generator)
            total = 0.0
            for step in range(steps):
                idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                loss = loss_fn(model(x_train[idx]), y_train[idx], idx)
                if not torch.isfinite(loss):
                    raise StageFailed(f"{label}: loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                                      "lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
                progress.advance(task)
            scheduler.step()
            val_acc = accuracy(predict(model, val.x), val.y)
            result.history.append({"epoch": epoch + 1, "train_loss": round(total / len(train), 6),
                                   "val_accuracy": round(val_acc, 6), "lr": optimizer.param_groups[0]["lr"]})
            if val_acc > result.best_val_accuracy:
                result.best_val_accuracy, result.best_epoch = val_acc, epoch + 1
                result.best_state = {k: v.clone() for k, v in model.state_dict().items()}
            progress.update(task, info=f"val {val_acc:.1%} (best {result.best_val_accuracy:.1%})")
            if state_path:
                _save_state(state_path, epoch + 1, model, optimizer, scheduler, result)
    model.load_state_dict(result.best_state)
    return result


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, transient=False)


def _save_state(path: Path, epoch: int, model, optimizer, scheduler, result: FitResult) -> None:
    tmp = atomic_target(path)
    torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "best_state": result.best_state,
                "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
                "history": result.history}, tmp)
    os.replace(tmp, path)


def _resume(path: Path, model, optimizer, scheduler, result: FitResult) -> int:
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    result.best_state, result.best_epoch = state["best_state"], state["best_epoch"]
    result.best_val_accuracy, result.history = state["best_val_accuracy"], state["history"]
    result.resumed_from_epoch = state["epoch"]
    return state["epoch"]
