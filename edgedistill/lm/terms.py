"""The loss terms of the language-model kinds as registries, one per kind, read by their training tasks
(lm/distill.py for sentence encoders, lm/causal.py for causal LMs) in the one training loop
(distill/trainer.py:train_epochs).

A term has a name (its key in the history and the stage's metrics), its weight read from the kind's
training config, and its loss on one step. Adding a term is an entry here, a weight field in that config,
and its test. The image kind's terms are the package edgedistill/distill/terms/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from edgedistill.distill.losses import divergence


@dataclass(frozen=True)
class TokenTerm:
    name: str
    weight: Callable[[Any], float]  # from the kind's training config
    loss: Callable[[Any], torch.Tensor]  # from the kind's step


def weighted_terms(registry: dict[str, TokenTerm], cfg, step) -> dict[str, torch.Tensor]:
    """Each term of `registry` whose weight in `cfg` is above 0, weighted, by name."""
    return {name: w * term.loss(step) for name, term in registry.items() if (w := term.weight(cfg)) > 0}


def registry(*terms: TokenTerm) -> dict[str, TokenTerm]:
    return {t.name: t for t in terms}


# --- sentence encoders ---

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


@dataclass
class EncoderStep:
    """One step of encoder distillation: both models' outputs on a batch (the teacher's None when only its
    cached embeddings are needed), the teacher's sentence embeddings, the student's pooled ones, and how the
    student's layers map onto the teacher's."""

    student: Any  # a transformers model output with hidden states (and attentions when asked)
    teacher: Any | None
    s_embedding: torch.Tensor
    t_embedding: torch.Tensor
    mask: torch.Tensor
    kept: list[int]  # student layer i came from teacher layer kept[i]
    widen: Callable[[torch.Tensor], torch.Tensor]  # a narrower student's states to the teacher's width
    hidden_loss: str


def _hidden(step: EncoderStep) -> torch.Tensor:
    # hidden_states[0] is the embeddings' output; layer i's output is hidden_states[i + 1].
    return torch.stack([hidden_state_loss(step.widen(step.student.hidden_states[i + 1]),
                                          step.teacher.hidden_states[j + 1], step.mask, step.hidden_loss)
                        for i, j in enumerate(step.kept)]).mean()


ENCODER_TERMS = registry(
    TokenTerm("embedding", lambda cfg: cfg.embedding_weight,
              lambda step: embedding_cosine_loss(step.s_embedding, step.t_embedding)),
    TokenTerm("hidden", lambda cfg: cfg.hidden_weight, _hidden),
    TokenTerm("attention", lambda cfg: cfg.attention_weight,
              lambda step: attention_kl(step.student.attentions[-1], step.teacher.attentions[-1], step.mask)),
)
# The terms that read the teacher's layers: without them the teacher's side is its embeddings, computed once.
ENCODER_LAYER_TERMS = ("hidden", "attention")


# --- causal language models ---

def topk_kd_loss(student_logits: torch.Tensor, top_values: torch.Tensor, top_indices: torch.Tensor,
                 temperature: float, kind: str = "forward_kl", beta: float = 0.5) -> torch.Tensor:
    """The divergence between teacher and student restricted to the teacher's top-k tokens at each position
    (both renormalized over them), averaged over positions, times T^2."""
    k = top_values.shape[-1]
    gathered = student_logits.gather(-1, top_indices.long())
    return divergence(gathered.reshape(-1, k), top_values.reshape(-1, k).to(gathered.dtype), temperature, kind, beta)


@dataclass
class CausalStep:
    """One step of causal-LM training, at the positions whose next token counts: the student's logits, the
    next tokens, and the teacher's logits there: its cached top-k (values and token ids), or all of them
    (top_indices None) when the teacher runs on the batch; both None without a teacher."""

    logits: torch.Tensor
    next_tokens: torch.Tensor
    top_values: torch.Tensor | None
    top_indices: torch.Tensor | None
    cfg: Any  # the CausalTrainConfig: temperature, divergence, beta


def _token_kd(step: CausalStep) -> torch.Tensor:
    cfg = step.cfg
    if step.top_indices is None:  # the teacher's whole distribution
        return divergence(step.logits, step.top_values, cfg.temperature, cfg.divergence, cfg.beta)
    return topk_kd_loss(step.logits, step.top_values, step.top_indices, cfg.temperature, cfg.divergence, cfg.beta)


CAUSAL_TERMS = registry(
    TokenTerm("ce", lambda cfg: 1 - cfg.alpha, lambda step: F.cross_entropy(step.logits, step.next_tokens)),
    TokenTerm("kd", lambda cfg: cfg.alpha, _token_kd),
)
