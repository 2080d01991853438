"""Distilling a sentence encoder in the one training loop: embedding cosine, hidden states through the layer
map, MiniLM attention KL (the terms of lm/terms.py:ENCODER_TERMS)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console

from edgedistill.distill.compute import CPU, Compute, to_cpu
from edgedistill.distill.trainer import TrainingTask, read_training_state, train_epochs
from edgedistill.errors import UserError
from edgedistill.fileio import atomic_output
from edgedistill.lm.encoder import embed, mean_pool, projection_of
from edgedistill.lm.terms import ENCODER_LAYER_TERMS, ENCODER_TERMS, EncoderStep, weighted_terms


def token_lengths(tokenizer, texts: list[str], max_length: int) -> list[int]:
    return [min(len(ids), max_length) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]


def length_bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random,
                            pool_batches: int = 50) -> list[list[int]]:
    """Batches of texts of similar length, in random order: a batch is padded to its longest text, so
    mixing a 10-token and a 100-token sentence wastes most of the work. Shuffled, then sorted by length
    within pools of `pool_batches` batches, so batches still differ from epoch to epoch."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


@dataclass
class EncoderDistillConfig:
    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-5
    max_length: int = 128
    embedding_weight: float = 1.0
    hidden_weight: float = 0.0  # on the mapped layers' outputs
    hidden_loss: str = "mse"
    attention_weight: float = 0.0  # last layer's attention (MiniLM)


@dataclass
class EncoderDistilled:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def _save_encoder_state(path: Path, epoch: int, student, optimizer, schedule, history: list[dict]) -> None:
    with atomic_output(path) as tmp:
        torch.save({"epoch": epoch, "student": to_cpu(student.state_dict()),
                    "optimizer": to_cpu(optimizer.state_dict()), "schedule": schedule.state_dict(),
                    "history": history, "torch_rng": torch.get_rng_state()}, tmp)


def _resume_encoder(path: Path | None, student, optimizer, schedule, console) -> tuple[int, list[dict]]:
    """The epoch to start from and the history so far: 0 and [] without a (readable) saved state."""
    state = read_training_state(path, console)
    if state is None:
        return 0, []
    student.load_state_dict(state["student"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["torch_rng"])  # dropout continues as it would have
    return state["epoch"], state["history"]


def distill_encoder(student, teacher, tokenizer, texts: list[str], kept: list[int], cfg: EncoderDistillConfig, *,
                    seed: int = 0, console: Console | None = None, evaluate: Callable[[], float] | None = None,
                    state_path: Path | None = None, compute: Compute = CPU) -> EncoderDistilled:
    """Train `student` (whose layer i came from teacher layer kept[i]) to reproduce the teacher.
    `evaluate`, when given, is called after each epoch (student in eval mode) and its value is recorded
    in the history as `val_accuracy`, for the report's training curve. `state_path`, when given, holds
    the training state after each epoch; an existing one is resumed from, so a killed run loses at most
    the epoch it was in. `compute`: where to train; both models are back on the CPU after."""
    try:
        return _distill_encoder(student, teacher, tokenizer, texts, kept, cfg, seed=seed, console=console,
                                evaluate=evaluate, state_path=state_path, compute=compute)
    finally:
        student.to("cpu")
        teacher.to("cpu")


def _distill_encoder(student, teacher, tokenizer, texts, kept, cfg, *, seed, console, evaluate, state_path,
                     compute: Compute) -> EncoderDistilled:
    torch.manual_seed(seed)
    student.to(compute.device)
    teacher.to(compute.device)
    teacher.eval()
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.01)
    steps_per_epoch = (len(texts) + cfg.batch_size - 1) // cfg.batch_size
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / (cfg.epochs * steps_per_epoch))
    if cfg.attention_weight > 0 and student.config.num_attention_heads != teacher.config.num_attention_heads:
        raise UserError(f"attention transfer compares heads one to one: the student has "
                        f"{student.config.num_attention_heads}, the teacher {teacher.config.num_attention_heads}; "
                        "set attention_weight to 0 for a narrower student")
    result, start = EncoderDistilled(), time.perf_counter()
    start_epoch, result.history = _resume_encoder(state_path, student, optimizer, schedule, console or Console())
    result.resumed_from_epoch = start_epoch

    def save(epoch: int) -> None:
        if state_path is not None:
            _save_encoder_state(state_path, epoch + 1, student, optimizer, schedule, result.history)

    task = EncoderTask(student, teacher, tokenizer, texts, kept, cfg, compute, random.Random(seed), result,
                       evaluate, save)
    train_epochs(task, start_epoch, optimizer, compute.scaler(), console or Console(), per_step=schedule)
    student.eval()
    result.seconds = time.perf_counter() - start
    return result


class EncoderTask(TrainingTask):
    """A sentence encoder's distillation in the one training loop: batches of texts of similar length, and
    the terms of ENCODER_TERMS on the student's and the teacher's outputs."""

    label = "distill encoder"

    def __init__(self, student, teacher, tokenizer, texts, kept, cfg, compute: Compute, order_rng: random.Random,
                 result: EncoderDistilled, evaluate: Callable[[], float] | None, save: Callable[[int], object]):
        self.student, self.teacher, self.tokenizer, self.texts, self.kept, self.cfg = (
            student, teacher, tokenizer, texts, kept, cfg)
        self.compute, self.result, self.evaluate, self.save = compute, result, evaluate, save
        self.want_attention = cfg.attention_weight > 0
        self.projection = projection_of(student)
        # With no term on the teacher's layers its side is one vector per text: computed once, not per epoch.
        reads_layers = any(ENCODER_TERMS[name].weight(cfg) > 0 for name in ENCODER_LAYER_TERMS)
        self.cached = None if reads_layers else embed(teacher, tokenizer, texts, max_length=cfg.max_length)
        lengths = token_lengths(tokenizer, texts, cfg.max_length)
        self.batches = [length_bucketed_batches(lengths, cfg.batch_size, order_rng) for _ in range(cfg.epochs)]

    def train_mode(self) -> None:
        self.student.train()

    def load(self, batch_ids: list[int]):
        batch = self.tokenizer([self.texts[i] for i in batch_ids], padding=True, truncation=True,
                               max_length=self.cfg.max_length, return_tensors="pt")
        return {k: self.compute.batch(v) for k, v in batch.items()}, batch_ids

    def terms(self, loaded, epoch: int) -> dict[str, torch.Tensor]:
        batch, batch_ids = loaded
        mask = batch["attention_mask"]
        s = self.student(**batch, output_hidden_states=True, output_attentions=self.want_attention)
        t = None
        if self.cached is None:
            with torch.no_grad():
                t = self.teacher(**batch, output_hidden_states=True, output_attentions=self.want_attention)
            t_embedding = mean_pool(t.last_hidden_state, mask)
        else:
            t_embedding = self.compute.batch(self.cached[batch_ids])
        widen = self.projection if self.projection is not None else (lambda h: h)
        step = EncoderStep(s, t, mean_pool(s.last_hidden_state, mask, self.projection), t_embedding, mask,
                           self.kept, widen, self.cfg.hidden_loss)
        return weighted_terms(ENCODER_TERMS, self.cfg, step)

    def end_epoch(self, epoch: int, totals: dict[str, float], seen: int) -> str:
        entry = {"epoch": epoch + 1, **{k: round(v / seen, 6) for k, v in totals.items()}}
        if self.evaluate is not None:
            self.student.eval()
            entry["val_accuracy"] = round(self.evaluate(), 6)
        self.result.history.append(entry)
        self.save(epoch)
        return f"loss {sum(totals.values()) / seen:.4f}"


@torch.no_grad()
def neighbour_overlap(student_emb: torch.Tensor, teacher_emb: torch.Tensor, k: int = 10) -> float:
    """Share of each sentence's k nearest neighbours (by cosine, itself excluded) that the student and the
    teacher agree on, averaged over sentences."""
    def neighbours(emb):
        sim = emb @ emb.T
        sim.fill_diagonal_(-float("inf"))
        return sim.topk(k, dim=1).indices

    s, t = neighbours(student_emb), neighbours(teacher_emb)
    return float(sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(s, t)) / (k * len(s)))


def encoder_agreement(student_emb: torch.Tensor, teacher_emb: torch.Tensor, k: int = 10) -> dict:
    """Mean cosine to the teacher's embeddings and top-k neighbour overlap, on the same sentences."""
    return {"mean_cosine": float(F.cosine_similarity(student_emb, teacher_emb, dim=-1).mean()),
            "neighbour_overlap": neighbour_overlap(student_emb, teacher_emb, k), "sentences": len(student_emb)}
