"""Distilling a sentence encoder: embedding cosine, hidden states through the layer map, MiniLM attention KL.

Logit KD for token distributions reuses edgedistill.distill.losses.divergence (forward KL, reverse KL,
generalized JSD with beta), applied per token.
"""

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
from edgedistill.distill.trainer import optimizer_step, progress_bar, stop_on_non_finite
from edgedistill.errors import UserError
from edgedistill.fileio import atomic_output
from edgedistill.lm.encoder import embed, mean_pool, projection_of


def embedding_cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity of sentence embeddings, averaged over the batch."""
    return (1 - F.cosine_similarity(student, teacher.detach(), dim=-1)).mean()


def hidden_state_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                      kind: str = "mse") -> torch.Tensor:
    """MSE or 1 - cosine between token hidden states (batch, tokens, hidden), over real tokens only."""
    teacher = teacher.detach()
    keep = mask.bool()
    s, t = student[keep], teacher[keep]
    if kind == "mse":
        return F.mse_loss(s, t)
    if kind == "cosine":
        return (1 - F.cosine_similarity(s, t, dim=-1)).mean()
    raise ValueError(f"unknown hidden-state loss {kind!r} (valid: mse, cosine)")


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MiniLM's self-attention distribution transfer: KL(teacher || student) of each head's attention
    distribution (batch, heads, queries, keys), averaged over heads and real query tokens."""
    eps = 1e-12
    kl = (teacher.detach() * ((teacher.detach() + eps).log() - (student + eps).log())).sum(-1)  # b, h, q
    query_mask = mask[:, None, :].to(kl.dtype)
    return (kl * query_mask).sum() / (query_mask.sum() * kl.shape[1]).clamp(min=1)


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
    from edgedistill.distill.trainer import read_training_state

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
    order_rng = random.Random(seed)
    student.to(compute.device)
    teacher.to(compute.device)
    teacher.eval()
    student.train()
    scaler = compute.scaler()
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.01)
    steps_per_epoch = (len(texts) + cfg.batch_size - 1) // cfg.batch_size
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / (cfg.epochs * steps_per_epoch))
    want_attention = cfg.attention_weight > 0
    projection = projection_of(student)
    widen = projection if projection is not None else (lambda h: h)
    if want_attention and student.config.num_attention_heads != teacher.config.num_attention_heads:
        raise UserError(f"attention transfer compares heads one to one: the student has "
                        f"{student.config.num_attention_heads}, the teacher {teacher.config.num_attention_heads}; "
                        "set attention_weight to 0 for a narrower student")
    result, start = EncoderDistilled(), time.perf_counter()
    start_epoch, result.history = _resume_encoder(state_path, student, optimizer, schedule, console or Console())
    result.resumed_from_epoch = start_epoch
    # With the embedding term alone the teacher's side is one vector per text: computed once, not per epoch.
    cached = None
    if cfg.hidden_weight == 0 and not want_attention:
        cached = embed(teacher, tokenizer, texts, max_length=cfg.max_length)
    lengths = token_lengths(tokenizer, texts, cfg.max_length)
    # Every epoch's batches drawn up front, so a resumed run sees the same ones.
    epoch_batches = [length_bucketed_batches(lengths, cfg.batch_size, order_rng) for _ in range(cfg.epochs)]
    with progress_bar(console or Console()) as progress:
        task = progress.add_task("distill encoder", total=cfg.epochs * steps_per_epoch,
                                 completed=start_epoch * steps_per_epoch, info="")
        for epoch in range(start_epoch, cfg.epochs):
            batches = epoch_batches[epoch]
            totals: dict[str, float] = {}
            for step, batch_ids in enumerate(batches):
                batch_texts = [texts[i] for i in batch_ids]
                batch = tokenizer(batch_texts, padding=True, truncation=True, max_length=cfg.max_length,
                                  return_tensors="pt")
                batch = {k: compute.batch(v) for k, v in batch.items()}
                mask = batch["attention_mask"]
                with compute.autocast():
                    s = student(**batch, output_hidden_states=True, output_attentions=want_attention)
                    if cached is None:
                        with torch.no_grad():
                            t = teacher(**batch, output_hidden_states=True, output_attentions=want_attention)
                        t_embedding = mean_pool(t.last_hidden_state, mask)
                    else:
                        t_embedding = compute.batch(cached[batch_ids])
                    terms = {"embedding": cfg.embedding_weight * embedding_cosine_loss(
                        mean_pool(s.last_hidden_state, mask, projection), t_embedding)}
                    if cfg.hidden_weight > 0:
                        # hidden_states[0] is the embeddings' output; layer i's output is hidden_states[i + 1].
                        # A narrower student's states reach the teacher's width through its projection.
                        terms["hidden"] = cfg.hidden_weight * torch.stack([
                            hidden_state_loss(widen(s.hidden_states[i + 1]), t.hidden_states[j + 1], mask,
                                              cfg.hidden_loss) for i, j in enumerate(kept)]).mean()
                    if want_attention:
                        terms["attention"] = cfg.attention_weight * attention_kl(s.attentions[-1], t.attentions[-1],
                                                                                 mask)
                stop_on_non_finite(terms, "encoder distillation", epoch, step, "lower the learning rate")
                loss = sum(terms.values())
                optimizer_step(terms, optimizer, scaler)
                schedule.step()
                for name, value in terms.items():
                    totals[name] = totals.get(name, 0.0) + value.item()
                progress.update(task, advance=1, info=f"loss {loss.item():.4f}")
            entry = {"epoch": epoch + 1, **{k: round(v / steps_per_epoch, 6) for k, v in totals.items()}}
            if evaluate is not None:
                student.eval()
                entry["val_accuracy"] = round(evaluate(), 6)
                student.train()
            result.history.append(entry)
            if state_path is not None:
                _save_encoder_state(state_path, epoch + 1, student, optimizer, schedule, result.history)
    student.eval()
    result.seconds = time.perf_counter() - start
    return result


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
