"""The training loop shared by teacher training and distillation.

Validation every epoch keeps the best weights; a checkpoint of the training state after every epoch
lets an interrupted run continue from its last finished epoch instead of starting over.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edgedistill.data import Split
from edgedistill.errors import StageFailed
from edgedistill.fileio import atomic_output

# (inputs, logits, labels, example indices, epoch) -> named loss terms (already weighted) or one tensor.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int],
                  "torch.Tensor | dict[str, torch.Tensor]"]
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


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


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit(model: torch.nn.Module, train: Split, val: Split, loss_fn: LossFn, cfg, *, seed: int, label: str,
        console: Console, state_path: Path | None = None, extra: torch.nn.Module | None = None,
        schedule=None, augment: Augment | None = None) -> FitResult:
    """`_fit`, with PyTorch's oneDNN (mkldnn) kernels off for models with thin convolutions (see `onednn_safe`)."""
    with onednn(onednn_safe(model, extra)):
        return _fit(model, train, val, loss_fn, cfg, seed=seed, label=label, console=console, state_path=state_path,
                    extra=extra, schedule=schedule, augment=augment)


THIN_CONV_CHANNELS = 8


@contextmanager
def onednn(enabled: bool) -> Iterator[None]:
    """oneDNN kernels on or off inside the block (the attribute itself: `mkldnn.flags()` also sets TF32 and warns)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def onednn_safe(*modules: torch.nn.Module | None) -> bool:
    """False when a module has a dense convolution (groups 1) with a kernel over 1x1, more than one input channel
    and fewer than THIN_CONV_CHANNELS output channels.

    Training such a model (a ResNet-style net at width 0.25: 3x3 convolutions from 4 to 4 channels) with oneDNN's
    kernels corrupted the heap here at 1 thread (glibc aborts) and gave other weights on every run at 2. The
    rule is drawn from what was measured, no wider: ResNet-style at width 0.5 and 1.0 and MobileNetV2-style at
    0.0625 and 0.125 (thin, but only 1x1, depthwise and 1-channel stem convolutions) trained repeatably with
    oneDNN, and about twice as fast as without it. benchmarks/onednn_training.py measures it.
    """
    return not any(isinstance(m, torch.nn.Conv2d) and m.groups == 1 and max(m.kernel_size) > 1
                   and m.in_channels > 1 and m.out_channels < THIN_CONV_CHANNELS
                   for module in modules if module is not None for m in module.modules())


def _fit(model: torch.nn.Module, train: Split, val: Split, loss_fn: LossFn, cfg, *, seed: int, label: str,
         console: Console, state_path: Path | None = None, extra: torch.nn.Module | None = None,
         schedule=None, augment: Augment | None = None) -> FitResult:
    """Train `model` for cfg.epochs with cosine LR; keep the weights with the best validation accuracy.

    `extra` holds trainable modules that train with the model but are not part of it (adapters).
    `schedule` (a distill.schedule.Schedule) picks each epoch's examples and LR scale.
    `state_path`, when given, holds the training state after each epoch; an existing one is resumed.
    A NaN or inf in any loss term stops training, naming the term and the step; the last epoch's state
    and the best weights so far are kept.
    """
    seed_everything(seed)
    rank, world = distributed_rank_world()
    if rank != 0:
        console = quiet_console()  # one progress bar: rank 0's
    forward = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model)  # all-reduces the model's gradients in backward
        # 1x1 convolutions get gradients in another memory layout than DDP's buckets: a copy, not an error.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])
    optimizer = make_optimizer(params, cfg)
    lr_scale = schedule.lr_scale if schedule is not None else (lambda epoch: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: 0.5 * (1 + math.cos(math.pi * e / cfg.epochs)) * lr_scale(e))
    result = FitResult(best_state=_copy_state(model), best_epoch=0, best_val_accuracy=-1.0)
    start_epoch = _resume(state_path, model, extra, optimizer, scheduler, result, console) if state_path else 0
    x_train, y_train = torch.from_numpy(train.x), torch.from_numpy(train.y)
    generator = torch.Generator().manual_seed(seed)

    def order(epoch: int) -> torch.Tensor:
        if schedule:
            return schedule.order(epoch, len(train), generator)
        return torch.randperm(len(train), generator=generator)

    orders = [order(e) for e in range(cfg.epochs)]  # fixed up front, so a resumed run sees the same order
    # Every rank draws the same orders (same seed) and takes its own shard of each: the global batch
    # stays cfg.batch_size, split across ranks.
    batch_size = max(1, cfg.batch_size // world)
    orders = [shard(o, rank, world) for o in orders]
    total_steps = sum(math.ceil(len(o) / batch_size) for o in orders)
    done_steps = sum(math.ceil(len(o) / batch_size) for o in orders[:start_epoch])
    with progress_bar(console) as progress:
        task = progress.add_task(label, total=total_steps, completed=done_steps, info="")
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            if extra is not None:
                extra.train()
            totals: dict[str, float] = {}
            seen = 0
            for step, idx in enumerate(orders[epoch].split(batch_size)):
                x = x_train[idx] if augment is None else augment(x_train[idx], generator)
                terms = loss_fn(x, forward(x), y_train[idx], idx, epoch)
                terms = terms if isinstance(terms, dict) else {"loss": terms}
                if not all(torch.isfinite(v) for v in terms.values()):
                    stop_on_non_finite(terms, label, epoch, step,
                                       f"the last good epoch's state is kept; {why_non_finite(x, model)}")
                loss = sum(terms.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if world > 1 and extra is not None:
                    average_gradients(extra, world)  # adapters live outside the DDP wrapper
                optimizer.step()
                for name, value in terms.items():
                    totals[name] = totals.get(name, 0.0) + value.item() * len(idx)
                seen += len(idx)
                progress.advance(task)
            scheduler.step()
            if world > 1:
                totals, seen = reduce_totals(totals, seen)
                sync_buffers(model)
            val_acc = accuracy(predict(model, val.x), val.y)  # the same weights on every rank: the same value
            entry = {"epoch": epoch + 1, "train_loss": round(sum(totals.values()) / seen, 6),
                     "val_accuracy": round(val_acc, 6), "lr": optimizer.param_groups[0]["lr"], "examples": seen}
            if schedule is not None:
                entry["phase"] = schedule.at(epoch).name
            if len(totals) > 1:
                entry["terms"] = {k: round(v / seen, 6) for k, v in totals.items()}
            result.history.append(entry)
            if val_acc > result.best_val_accuracy:
                result.best_val_accuracy, result.best_epoch = val_acc, epoch + 1
                result.best_state = _copy_state(model)
            progress.update(task, info=f"val {val_acc:.1%} (best {result.best_val_accuracy:.1%})")
            if state_path and rank == 0:
                _save_state(state_path, epoch + 1, model, extra, optimizer, scheduler, result)
    model.load_state_dict(result.best_state)
    return result


_data_parallel = False


@contextmanager
def data_parallel() -> Iterator[None]:
    """Training inside this block is data-parallel over the process group, when there is one. Outside it
    (rank 0 training the teacher while the other ranks wait for the distill stage) it is one process."""
    global _data_parallel
    before, _data_parallel = _data_parallel, True
    try:
        yield
    finally:
        _data_parallel = before


def stop_on_non_finite(terms: dict[str, torch.Tensor], label: str, epoch: int, step: int, hint: str) -> None:
    """The NaN guard of every training loop: a NaN or inf loss term stops training, naming it and the step."""
    for name, value in terms.items():
        if not torch.isfinite(value):
            raise StageFailed(f"{label}: loss term '{name}' became {value.item()} at epoch {epoch + 1}, "
                              f"step {step + 1}; {hint}")


def why_non_finite(x: torch.Tensor, model: torch.nn.Module) -> str:
    """What made a loss NaN or inf, as far as can be told: the data, weights gone bad, or the loss itself."""
    if not torch.isfinite(x).all():
        return "the input batch holds NaN or inf: check the data"
    bad = next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        return f"the weights of '{bad}' hold NaN or inf: lower the learning rate"
    return ("inputs and weights were finite, so the loss overflowed: lower the learning rate or that term's "
            "weight, or check the teacher")


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world size) inside `data_parallel()` under torch.distributed; (0, 1) otherwise."""
    import torch.distributed as dist

    if _data_parallel and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(order: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's share of an epoch's order, padded by wrapping around so every rank takes as many
    steps (DistributedSampler's rule): collectives must line up step by step."""
    if world == 1:
        return order
    per_rank = math.ceil(len(order) / world)
    padded = torch.cat([order, order[:per_rank * world - len(order)]])
    return padded[rank::world]


def average_gradients(module: torch.nn.Module, world: int) -> None:
    import torch.distributed as dist

    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's batch-norm statistics on every rank (DDP sends them only at the start of a forward), so
    every rank validates the same model and keeps the same best epoch."""
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, 0)


def reduce_totals(totals: dict[str, float], seen: int) -> tuple[dict[str, float], int]:
    """Loss sums and example counts over all ranks."""
    import torch.distributed as dist

    names = sorted(totals)
    values = torch.tensor([totals[n] for n in names] + [float(seen)], dtype=torch.float64)
    dist.all_reduce(values)
    return dict(zip(names, values[:-1].tolist())), int(values[-1].item())


def _copy_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def quiet_console() -> Console:
    return Console(file=open(os.devnull, "w"))


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, transient=False)


def _save_state(path: Path, epoch: int, model, extra, optimizer, scheduler, result: FitResult) -> None:
    with atomic_output(path) as tmp:
        torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "extra": extra.state_dict() if extra is not None else {},
                    "scheduler": scheduler.state_dict(), "best_state": result.best_state,
                    "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
                    "history": result.history}, tmp)


def read_training_state(path: Path | None, console: Console) -> dict | None:
    """The training state saved at `path`, or None. A damaged one (cut short by a crash or a full disk) is
    moved aside to `<name>.damaged` and training starts over, instead of failing every later --resume."""
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
            raise ValueError("not a training state")
        return state
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, the remedy is to start over
        aside = path.with_name(f"{path.name}.damaged")
        os.replace(path, aside)
        console.print(f"  [yellow]warning:[/yellow] {path.name} could not be read ({type(exc).__name__}); set aside "
                      f"as {aside.name}, training starts from epoch 1")
        return None


def _resume(path: Path, model, extra, optimizer, scheduler, result: FitResult, console: Console) -> int:
    state = read_training_state(path, console)
    if state is None:
        return 0
    model.load_state_dict(state["model"])
    if extra is not None:
        extra.load_state_dict(state["extra"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    result.best_state, result.best_epoch = state["best_state"], state["best_epoch"]
    result.best_val_accuracy, result.history = state["best_val_accuracy"], state["history"]
    result.resumed_from_epoch = state["epoch"]
    return state["epoch"]
