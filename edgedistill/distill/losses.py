"""Distillation loss terms. Each takes tensors and returns a scalar; weights are applied by the objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
FEATURE_LOSSES = ("mse", "smooth_l1", "cosine")


def divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
               kind: str = "forward_kl", beta: float = 0.5) -> torch.Tensor:
    """Divergence between temperature-softened distributions, times T^2, averaged over the batch.

    forward_kl is KL(teacher || student) (Hinton et al. 2015, mean-seeking); reverse_kl is
    KL(student || teacher) (mode-seeking); jsd is the generalized Jensen-Shannon divergence with mixture
    weight beta (beta=0.5 is the symmetric JSD). The T^2 factor keeps gradients on the scale of the
    hard-label term when T changes.
    """
    log_s = F.log_softmax(student_logits / temperature, dim=1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=1)
    if kind == "forward_kl":
        value = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)
    elif kind == "reverse_kl":
        value = F.kl_div(log_t, log_s, reduction="batchmean", log_target=True)
    elif kind == "jsd":
        # log of the mixture beta*p_t + (1-beta)*p_s, computed stably in log space.
        log_m = torch.logsumexp(torch.stack([log_t + torch.log(torch.tensor(beta)),
                                             log_s + torch.log(torch.tensor(1 - beta))]), dim=0)
        value = (beta * F.kl_div(log_m, log_t, reduction="batchmean", log_target=True)
                 + (1 - beta) * F.kl_div(log_m, log_s, reduction="batchmean", log_target=True))
    else:
        raise ValueError(f"unknown divergence {kind!r} (valid: {', '.join(DIVERGENCES)})")
    return value * temperature**2


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Distance between aligned feature maps of the same shape (the teacher's side carries no gradient)."""
    teacher = teacher.detach()
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(student, teacher)
    if kind == "cosine":
        # 1 - cosine similarity per sample over all feature dimensions.
        return (1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)).mean()
    raise ValueError(f"unknown feature loss {kind!r} (valid: {', '.join(FEATURE_LOSSES)})")


def attention_map(features: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Zagoruyko & Komodakis (2017): mean over channels of |A|^p, flattened and L2-normalized per sample."""
    return F.normalize(features.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Mean squared difference of normalized attention maps (spatial sizes must already agree)."""
    return (attention_map(student, p) - attention_map(teacher.detach(), p)).pow(2).mean()
