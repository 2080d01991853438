"""One distillation from a teacher into a student, and teacher-assistant chains for large width gaps."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from edgedistill.data import Dataset
from edgedistill.distill import augment as augmentation
from edgedistill.distill.cache import TeacherOutputs, cache_key, load_or_compute, lookup, merge_shards, store
from edgedistill.distill.cache import compute as teacher_pass
from edgedistill.distill.compute import CPU, Compute
from edgedistill.distill.hooks import FeatureHooks
from edgedistill.distill.mapping import probe_shapes, stage_layers
from edgedistill.distill.objective import DistillObjective
from edgedistill.distill.parallel import SINGLE, DataParallel
from edgedistill.distill.schedule import Schedule
from edgedistill.distill.trainer import FitResult, fit


@dataclass
class Distilled:
    result: FitResult
    cache: str  # hit | miss | memory | online (cache: off) | bypass (augmentation)
    mapping: dict
    phases: list[dict]
    seconds: float
    terms: list[str] = field(default_factory=list)  # the loss terms trained on (kd, ce, then the registry's)
    teacher_train_accuracy: float = float("nan")  # the teacher's top-1 on the training split
    assistants: list[dict] = field(default_factory=list)


def distill_model(student: torch.nn.Module, teacher: torch.nn.Module, data: Dataset, cfg, *, seed: int, label: str,
                  console: Console, state_path: Path | None = None, parallel: DataParallel = SINGLE,
                  compute: Compute = CPU) -> Distilled:
    """Train `student` from `teacher` with every loss term, phase and cache setting of `cfg` (a Distill), on
    this rank's shard when `parallel` has several."""
    start = time.perf_counter()
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    objective = DistillObjective(cfg, student, teacher, torch.from_numpy(data.train.x[:2]))  # planned on the CPU
    teacher.to(compute.device)  # its pass over the data (cached or online) runs where training does
    s_out = FeatureHooks(student, objective.student_outputs, only_training=True)
    s_in = FeatureHooks(student, objective.student_inputs, "input", only_training=True)
    augment = distill_augmentation(cfg)
    bank = view_bank(cfg, augment, objective, seed, len(data.train))
    online = (augment is not None and bank is None) or cfg.cache == "off"
    t_all: TeacherOutputs
    t_views: TeacherOutputs | None = None
    if online:
        t_all = teacher_pass(teacher, data.train.x, [], [])  # logits only: to rank examples by difficulty
        cache = "online" if augment is None else "bypass"
        t_out = FeatureHooks(teacher, objective.teacher_outputs)
        t_in = FeatureHooks(teacher, objective.teacher_inputs, "input")
    else:
        t_all = cached_teacher_outputs(teacher, data.train.x, objective.teacher_outputs, objective.teacher_inputs,
                                       parallel)
        cache = t_all.status
        if bank is not None:
            t_views = teacher_on_views(teacher, data.train.x, bank, cfg, console)
            cache += f"; augmented views: {t_views.status} ({bank.views} per image)"
    labels = torch.from_numpy(data.train.y)
    t_train_logits = torch.from_numpy(np.array(t_all.logits))
    confidence = torch.softmax(t_train_logits, dim=1)[torch.arange(len(labels)), labels]
    schedule = Schedule(cfg, difficulty=1 - confidence)

    def loss_fn(x, logits, y, idx, epoch):
        plan, step = schedule.at(epoch), f"epoch {epoch + 1}"
        s_feats, s_ins = s_out.collect(step), s_in.collect(step)
        if online:
            with torch.no_grad():  # in the layout the cache's pass uses, so both give the same outputs
                t_logits = teacher(x.contiguous())
            t_feats, t_ins = t_out.collect(step), t_in.collect(step)
        else:  # the cache lives in host memory: this batch's rows go to the device (of the views' bank, if any)
            t_logits, t_feats, t_ins = (t_views or t_all).batch(idx)
            t_logits = t_logits.to(x.device, non_blocking=True)
            t_feats = {k: v.to(x.device, non_blocking=True) for k, v in t_feats.items()}
            t_ins = {k: v.to(x.device, non_blocking=True) for k, v in t_ins.items()}
        return objective(logits, y, s_feats, s_ins, t_logits, t_feats, t_ins, plan, schedule.temperature(epoch),
                         epoch)

    try:
        result = fit(student, data.train, data.val, loss_fn, cfg, seed=seed, label=label, console=console,
                     state_path=state_path, extra=objective.adapters, schedule=schedule,
                     augment=bank or augment, parallel=parallel,
                     compute=compute)
    finally:
        for hooks in (s_out, s_in) + ((t_out, t_in) if online else ()):
            hooks.remove()
        teacher.to("cpu")
    phases = [{"name": p.name, "epochs": [p.first_epoch + 1, p.last_epoch], "alpha": p.alpha,
               "lr_scale": p.lr_scale, "easy_fraction": p.easy_fraction} for p in schedule.plans]
    teacher_fit = float((t_train_logits.argmax(1) == labels).float().mean())
    return Distilled(result, cache, objective.describe(), phases, time.perf_counter() - start, objective.names,
                     teacher_train_accuracy=teacher_fit)


def train_from_labels(student: torch.nn.Module, data: Dataset, cfg, *, seed: int, console: Console,
                      state_path: Path | None = None, compute: Compute = CPU) -> Distilled:
    """The scratch baseline: `student` trained on the true labels alone with distillation's epochs, batch,
    optimizer, learning rate and augmentation, so that the gain of distilling is measured, not assumed."""
    import torch.nn.functional as F

    start = time.perf_counter()
    result = fit(student, data.train, data.val, lambda x, logits, y, idx, epoch: F.cross_entropy(logits, y), cfg,
                 seed=seed, label="baseline (labels only)", console=console, state_path=state_path,
                 augment=distill_augmentation(cfg, with_mixup=False), compute=compute)
    return Distilled(result, "not used", {}, [], time.perf_counter() - start, ["ce"])


def distill_augmentation(cfg, with_mixup: bool = True):
    """Distillation's augmentation: `distill.augment`, or the consistent term's views (crops, flips, shifts, and
    mixup unless `with_mixup` is off: the scratch baseline trains on labels, which mixed images do not have)."""
    term = cfg.consistent
    if term is None:
        return augmentation.build(cfg.augment)
    return augmentation.build(term, term.mixup if with_mixup else 0.0)


def view_bank(cfg, augment, objective: DistillObjective, seed: int, count: int) -> augmentation.ViewBank | None:
    """The bank of seeded views `distill.teacher_views` asks for, when it can serve: augmentation on, the cache on,
    no mixup (it mixes images, a view is one image's) and no teacher layer hooked (K views of every feature map
    would not fit the cache); None otherwise, and the teacher runs online on every batch."""
    if not cfg.teacher_views or augment is None or cfg.cache == "off" or cfg.consistent is not None:
        return None
    if objective.teacher_outputs or objective.teacher_inputs:
        return None
    return augmentation.ViewBank(augmentation.build(cfg.augment), cfg.teacher_views, seed, count)


def teacher_on_views(teacher, x, bank: augmentation.ViewBank, cfg, console: Console,
                     batch_size: int = 128) -> TeacherOutputs:
    """The teacher's logits on every view of the bank, row k * N + i for view k of image i: from the cache, or
    computed once (K passes over the training split) and stored, keyed by the teacher's weights, the data, the
    augmentation, the view count and the seed."""
    from edgedistill.distill.trainer import progress_bar

    key = "views-" + cache_key(teacher, x, [], [], augment=cfg.augment.model_dump(mode="json"), views=bank.views,
                               seed=bank.seed)
    cached = lookup(key)
    if cached is not None:
        return cached
    n = len(x)
    logits = None
    device = next(teacher.parameters()).device
    with torch.no_grad(), progress_bar(console) as progress:
        task = progress.add_task(f"teacher on {bank.views} augmented views", total=bank.views * n, info="")
        for k in range(bank.views):
            for start in range(0, n, batch_size):
                idx = torch.arange(start, min(start + batch_size, n))
                views = bank.render(torch.from_numpy(np.ascontiguousarray(x[idx.numpy()])), idx,
                                    torch.full((len(idx),), k))
                out = teacher(views.to(device)).float().cpu().numpy()
                if logits is None:
                    logits = np.empty((bank.views * n, out.shape[1]), np.float32)
                logits[k * n + start:k * n + start + len(idx)] = out
                progress.update(task, advance=len(idx))
    result = TeacherOutputs(logits)
    store(key, result)
    return result


def cached_teacher_outputs(teacher, x, outputs: list[str], inputs: list[str],
                           parallel: DataParallel = SINGLE) -> TeacherOutputs:
    """The teacher-output cache. With several ranks a miss is built in parallel: each rank runs the teacher on
    its shard (examples rank, rank+W, ...), the shards are gathered and merged on every rank, and the first
    rank of each machine stores the entry, so machines need not share a cache folder."""
    rank, world = parallel.rank, parallel.world
    if world == 1:
        return load_or_compute(teacher, x, outputs, inputs)
    import torch.distributed as dist

    key = cache_key(teacher, x, outputs, inputs)
    cached = lookup(key)
    everywhere = torch.tensor([int(cached is not None)])
    dist.all_reduce(everywhere, op=dist.ReduceOp.MIN)  # every rank must take the same path
    if everywhere.item():
        return cached
    shards: list = [None] * world
    dist.all_gather_object(shards, teacher_pass(teacher, x[rank::world], outputs, inputs))
    merged = merge_shards(shards, len(x))
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        store(key, merged)
    # No rank goes on before the entry is stored: a rank that looked it up again while it was being written would
    # miss, and then every rank would compute the teacher once more.
    dist.barrier()
    merged.status, merged.key = "miss", key
    return merged


def width_ratio(student: torch.nn.Module, teacher: torch.nn.Module, sample: torch.Tensor) -> float:
    """Teacher over student channels at their last stages: the gap teacher assistants bridge."""
    s_stages, t_stages = stage_layers(student, sample), stage_layers(teacher, sample)
    if not s_stages or not t_stages:
        return 1.0  # no stages to compare (a model that is a single layer): no gap to bridge
    s_last, t_last = s_stages[-1], t_stages[-1]
    return probe_shapes(teacher, [t_last], sample)[t_last][0] / probe_shapes(student, [s_last], sample)[s_last][0]


def assistant_widths(student_width: float, ratio: float, count: int) -> list[float]:
    """Width multipliers of the assistants, geometrically spaced between the teacher's and the student's
    channel counts (Mirzadeh et al. 2020 find intermediate sizes best), largest first."""
    return [student_width * ratio ** (1 - j / (count + 1)) for j in range(1, count + 1)]
