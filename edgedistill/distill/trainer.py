"""The training loop shared by teacher training and distillation.

Validation every epoch keeps the best weights; a checkpoint of the training state after every epoch
lets an interrupted run continue from its last finished epoch instead of starting over.
"""

from __future__ import annotations

import math
import os
import random
import time
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
from edgedistill.distill.compute import CPU, Compute, device_of, to_cpu
from edgedistill.distill.parallel import SINGLE, DataParallel
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

    def record(self, epoch: int, model: torch.nn.Module, val_accuracy: float, totals: dict[str, float], seen: int,
               lr: float, phase: str | None, seconds: float | None = None) -> None:
        """One finished epoch in the history (`seconds`: its wall time, training and validation); the model's
        weights kept when they validate best so far."""
        entry = {"epoch": epoch + 1, "train_loss": round(sum(totals.values()) / seen, 6),
                 "val_accuracy": round(val_accuracy, 6), "lr": lr, "examples": seen}
        if seconds is not None:
            entry["seconds"] = round(seconds, 2)
        if phase is not None:
            entry["phase"] = phase
        if len(totals) > 1:
            entry["terms"] = {k: round(v / seen, 6) for k, v in totals.items()}
        self.history.append(entry)
        if val_accuracy > self.best_val_accuracy:
            self.best_val_accuracy, self.best_epoch = val_accuracy, epoch + 1
            self.best_state = _copy_state(model)


@torch.no_grad()
def predict(model: torch.nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Logits for `x` in eval mode, as a numpy array, computed on the device the model is on."""
    model.eval()
    device = device_of(model)
    outs = [model(torch.from_numpy(x[i:i + batch_size]).to(device)).float().cpu()
            for i in range(0, len(x), batch_size)]
    return torch.cat(outs).numpy()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit(model: torch.nn.Module, train: Split, val: Split, loss_fn: LossFn, cfg, *, seed: int, label: str,
        console: Console, state_path: Path | None = None, extra: torch.nn.Module | None = None,
        schedule=None, augment: Augment | None = None, parallel: DataParallel = SINGLE,
        compute: Compute = CPU) -> FitResult:
    """Train `model` (see `_fit`), with PyTorch's oneDNN (mkldnn) kernels off for models with thin convolutions
    (see `onednn_safe`).

    `extra` holds trainable modules that train with the model but are not part of it (adapters).
    `schedule` (a distill.schedule.Schedule) picks each epoch's examples and LR scale.
    `state_path`, when given, holds the training state after each epoch; an existing one is resumed.
    `parallel` says which rank of how many this process is: each trains its shard of every epoch.
    `compute` says where (and in what precision) to train; the model and `extra` are back on the CPU after.
    A NaN or inf in any loss term stops training, naming the term and the step; the last epoch's state
    and the best weights so far are kept.
    """
    with onednn(onednn_safe(model, extra)):
        try:
            return _fit(model, train, val, loss_fn, cfg, seed=seed, label=label, console=console,
                        state_path=state_path, extra=extra, schedule=schedule, augment=augment, parallel=parallel,
                        compute=compute)
        finally:  # what callers save, evaluate and export is on the CPU in the default layout, whatever trained it
            for module in (model, extra):
                if module is not None:
                    module.to("cpu", memory_format=torch.contiguous_format)


THIN_CONV_CHANNELS = 8


def training_layout(model: torch.nn.Module) -> torch.memory_format:
    """Channels-last (NHWC) for models with 2-D convolutions, the layout oneDNN's convolution kernels work in:
    measured here (benchmarks/README.md, "Training throughput"), a training step of the ResNet teacher took 1.71x
    fewer seconds than in the default NCHW at 28x28 and 1.28x at 8x8 (batch 256); the MobileNetV2-style
    students 0.93x to 1.89x. Models trained so are put back in the default layout before anything saves or
    exports them."""
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    return torch.channels_last if has_conv else torch.contiguous_format


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
         console: Console, state_path: Path | None, extra: torch.nn.Module | None, schedule, augment: Augment | None,
         parallel: DataParallel, compute: Compute) -> FitResult:
    """Train `model` for cfg.epochs with cosine LR; keep the weights with the best validation accuracy.

    It sequences its collaborators: the epoch plan (which examples, in which order, on this rank), the one
    training loop (`train_epochs`, fed by a `ClassifierTask`), validation and the best weights at each epoch's
    end, and the checkpoint that a later call resumes from.
    """
    seed_everything(seed)
    if not parallel.is_main:
        console = quiet_console()  # one progress bar: rank 0's
    layout = training_layout(model)
    model.to(compute.device, memory_format=layout)
    if extra is not None:
        extra.to(compute.device, memory_format=layout)
    params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])
    optimizer = make_optimizer(params, cfg)
    scheduler = cosine_schedule(optimizer, cfg.epochs, schedule.lr_scale if schedule is not None else None,
                                warmup=cfg.warmup_epochs)
    result = FitResult(best_state=_copy_state(model), best_epoch=0, best_val_accuracy=-1.0)
    checkpoint = Checkpoint(state_path, model, extra, optimizer, scheduler, writes=parallel.is_main)
    start_epoch = checkpoint.resume(result, console)
    generator = torch.Generator().manual_seed(seed)
    plan = EpochPlan.draw(len(train), cfg.epochs, cfg.batch_size, generator, schedule, parallel)
    epoch_started = [time.perf_counter()]

    def end_epoch(epoch: int, totals: dict[str, float], seen: int) -> str:
        scheduler.step()
        totals, seen = parallel.reduce_totals(totals, seen, compute.device)
        parallel.sync_buffers(model)
        val_acc = accuracy(predict(model, val.x), val.y)  # the same weights on every rank: the same value
        now = time.perf_counter()
        result.record(epoch, model, val_acc, totals, seen, optimizer.param_groups[0]["lr"],
                      schedule.at(epoch).name if schedule is not None else None, now - epoch_started[0])
        epoch_started[0] = now
        checkpoint.save(epoch + 1, result)
        return f"val {val_acc:.1%} (best {result.best_val_accuracy:.1%})"

    task = ClassifierTask(label, [order.split(plan.batch_size) for order in plan.orders], end_epoch, model,
                          parallel.wrap(model, compute.device), extra, loss_fn, augment, generator, train.x,
                          torch.from_numpy(train.y), compute, layout)
    # adapters live outside the DDP wrapper: their gradients are averaged before each update
    train_epochs(task, start_epoch, optimizer, compute.scaler(), console,
                 before_step=lambda: parallel.average_gradients(extra))
    model.load_state_dict(result.best_state)
    return result


class TrainingTask:
    """What one model kind brings to `train_epochs`: every epoch's batches (drawn up front, so a resumed run
    sees the same ones), how a batch reaches the device, its weighted loss terms, and what ends an epoch
    (validation, history, checkpoint). Image classifiers, sentence encoders and causal LMs differ only here."""

    label: str
    batches: list[list]  # per epoch, the batches in order (whatever `load` takes)
    compute: Compute  # where the steps run, in which precision

    def train_mode(self) -> None:
        raise NotImplementedError

    def load(self, batch):
        """The batch on the training device, made outside autocast (augmentations stay in float32)."""
        raise NotImplementedError

    def terms(self, loaded, epoch: int) -> dict[str, torch.Tensor]:
        """The weighted loss terms of one step, by name (under autocast)."""
        raise NotImplementedError

    def size(self, batch) -> int:
        return len(batch)

    def non_finite_hint(self, loaded) -> str:
        return "lower the learning rate"

    def end_epoch(self, epoch: int, totals: dict[str, float], seen: int) -> str:
        """After an epoch's last step, with the terms' example-weighted sums: returns the progress bar's note."""
        raise NotImplementedError


def train_epochs(task: TrainingTask, start_epoch: int, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, console: Console, *, clip: list[torch.nn.Parameter] | None = None,
                 before_step: Callable[[], None] | None = None,
                 per_step: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
    """The one training loop of every model kind: for each epoch left, each batch is loaded, its loss terms
    computed in the compute's precision, checked by the NaN guard, and stepped by `optimizer_step`
    (`per_step`: an LR schedule that moves every step); the task ends each epoch. A progress bar counts the
    steps of every epoch, a resumed run's finished ones included."""
    with progress_bar(console) as progress:
        bar = progress.add_task(task.label, total=sum(map(len, task.batches)),
                                completed=sum(map(len, task.batches[:start_epoch])), info="")
        for epoch in range(start_epoch, len(task.batches)):
            task.train_mode()
            totals: dict[str, float] = {}
            seen = 0
            for step, batch in enumerate(task.batches[epoch]):
                loaded = task.load(batch)
                with task.compute.autocast():
                    terms = task.terms(loaded, epoch)
                if not all(torch.isfinite(v) for v in terms.values()):
                    stop_on_non_finite(terms, task.label, epoch, step, task.non_finite_hint(loaded))
                optimizer_step(terms, optimizer, scaler, clip=clip, before_step=before_step)
                if per_step is not None:
                    per_step.step()
                n = task.size(batch)
                for name, value in terms.items():
                    totals[name] = totals.get(name, 0.0) + value.item() * n
                seen += n
                progress.update(bar, advance=1, info=f"loss {sum(totals.values()) / seen:.4f}")
            progress.update(bar, info=task.end_epoch(epoch, totals, seen))


def cosine_schedule(optimizer, epochs: int, lr_scale: Callable[[int], float] | None, warmup: int = 0):
    """A linear rise over the first `warmup` epochs (epoch e at (e + 1) / (warmup + 1) of the LR), then cosine
    decay over the rest; times a phase's LR scale."""
    scale = lr_scale or (lambda epoch: 1.0)

    def factor(e: int) -> float:
        if e < warmup:
            return (e + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (e - warmup) / (epochs - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: factor(e) * scale(e))


@dataclass
class EpochPlan:
    """Every epoch's example order, drawn up front (so a resumed run sees the same orders), each rank's shard
    of it, and the batch each rank takes."""

    orders: list[torch.Tensor]
    batch_size: int

    @classmethod
    def draw(cls, n: int, epochs: int, global_batch: int, generator: torch.Generator, schedule,
             parallel: DataParallel) -> EpochPlan:
        # Every rank draws the same orders (same seed) and takes its own shard of each: the global batch
        # stays what the pipeline asks for, split across ranks.
        orders = [schedule.order(e, n, generator) if schedule else torch.randperm(n, generator=generator)
                  for e in range(epochs)]
        return cls([parallel.shard(o) for o in orders], parallel.batch_size(global_batch))


@dataclass
class ClassifierTask(TrainingTask):
    """An image classifier's (or any array-fed model's) training: batches of example indices into `x`,
    augmented, and `loss_fn`'s terms on the model's logits."""

    label: str
    batches: list[list[torch.Tensor]]
    end: Callable[[int, dict[str, float], int], str]
    model: torch.nn.Module
    forward: torch.nn.Module  # the model, or its DDP wrapper
    extra: torch.nn.Module | None  # trainable modules outside the model (adapters)
    loss_fn: LossFn
    augment: Augment | None
    generator: torch.Generator
    x: np.ndarray  # the training split (an array, or image files read batch by batch)
    y: torch.Tensor
    compute: Compute
    layout: torch.memory_format = torch.contiguous_format  # of the image batches: the model's (training_layout)

    def train_mode(self) -> None:
        self.model.train()
        if self.extra is not None:
            self.extra.train()

    def load(self, idx: torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(self.x[idx.numpy()]))
        y = self.y[idx]
        views_of = getattr(self.augment, "views_of", None)  # a ViewBank (distill/augment.py): cached teacher views
        if views_of is not None:
            x, idx = views_of(x, idx, self.generator)  # idx now names the view's row of the teacher's bank
        elif self.augment is not None:
            x = self.augment(x, self.generator)
        if x.dim() == 4:
            x = x.contiguous(memory_format=self.layout)
        return self.compute.batch(x), self.compute.batch(y), idx

    def terms(self, loaded, epoch: int) -> dict[str, torch.Tensor]:
        x, y, idx = loaded
        terms = self.loss_fn(x, self.forward(x), y, idx, epoch)
        return terms if isinstance(terms, dict) else {"loss": terms}

    def non_finite_hint(self, loaded) -> str:
        return f"the last good epoch's state is kept; {why_non_finite(loaded[0], self.model)}"

    def end_epoch(self, epoch: int, totals: dict[str, float], seen: int) -> str:
        return self.end(epoch, totals, seen)


def optimizer_step(terms: dict[str, torch.Tensor], optimizer, scaler: torch.amp.GradScaler, *,
                   clip: list[torch.nn.Parameter] | None = None, before_step: Callable[[], None] | None = None) -> None:
    """The update of every training loop (image, sentence encoder, causal LM): backward on the sum of the loss
    terms through the precision's gradient scaler, then, once gradients are whole (`before_step`: averaged across
    ranks) and unscaled, clipped to norm 1 when `clip` names parameters, and the optimizer's step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(sum(terms.values())).backward()
    if before_step is not None:
        before_step()
    if clip is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(clip, 1.0)
    scaler.step(optimizer)
    scaler.update()


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


def _copy_state(model: torch.nn.Module) -> dict:
    """The model's weights, copied to the CPU: the best epoch's survive the next epoch's updates."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def quiet_console() -> Console:
    return Console(file=open(os.devnull, "w"))


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, transient=False)


@dataclass
class Checkpoint:
    """The training state after each epoch at `path` (model, adapters, optimizer, LR schedule, best weights,
    history), written by rank 0 only, and resumed from when it exists."""

    path: Path | None
    model: torch.nn.Module
    extra: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    writes: bool = True

    def save(self, epoch: int, result: FitResult) -> None:
        if self.path is None or not self.writes:
            return
        with atomic_output(self.path) as tmp:
            # Saved from the CPU, so a state written on a GPU resumes on a CPU and back.
            torch.save({"epoch": epoch, "model": to_cpu(self.model.state_dict()),
                        "optimizer": to_cpu(self.optimizer.state_dict()),
                        "extra": to_cpu(self.extra.state_dict()) if self.extra is not None else {},
                        "scheduler": self.scheduler.state_dict(), "best_state": result.best_state,
                        "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
                        "history": result.history}, tmp)

    def resume(self, result: FitResult, console: Console) -> int:
        """The first epoch left to train: 0, or the one after the saved state's, which is loaded."""
        state = read_training_state(self.path, console)
        if state is None:
            return 0
        self.model.load_state_dict(state["model"])
        if self.extra is not None:
            self.extra.load_state_dict(state["extra"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        result.best_state, result.best_epoch = state["best_state"], state["best_epoch"]
        result.best_val_accuracy, result.history = state["best_val_accuracy"], state["history"]
        result.resumed_from_epoch = state["epoch"]
        return state["epoch"]


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
