"""Decoupled knowledge distillation (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022,
arXiv:2203.08679): classical KD split into a target-class part (TCKD: the binary "is it the labelled class"
distribution) and a non-target part (NCKD: the distribution over the other classes), weighted by `alpha` and
`beta` separately, ramped up linearly over `warmup_epochs`. The authors' defaults for CIFAR-100 (their code,
github.com/megvii-research/mdistiller, configs/cifar100/dkd): alpha 1, beta 8, T 4, 20 warm-up epochs, used
with cross-entropy at weight 1 (here: `alpha: 0` in `distill`, so that plain KD is off and labels weigh 1).
"""

from __future__ import annotations

from pydantic import Field

from edgedistill.config.device import Strict
from edgedistill.distill.terms import LossTerm


class DkdConfig(Strict):
    weight: float = Field(default=1.0, ge=0)
    alpha: float = Field(default=1.0, ge=0, description="weight of the target-class part (TCKD)")
    beta: float = Field(default=8.0, ge=0, description="weight of the non-target part (NCKD)")
    warmup_epochs: int = Field(default=20, ge=0, le=10_000, description="the term grows linearly from 0 over "
                                                                         "this many epochs")


def dkd_parts(student_logits, teacher_logits, labels, temperature: float):
    """(TCKD, NCKD), each KL(teacher || student) times T^2, averaged over the batch; the teacher carries no
    gradient. Computed in log space: the reference code's log of summed softmax probabilities underflows for
    confident students."""
    import torch
    import torch.nn.functional as F

    s, t = student_logits / temperature, teacher_logits.detach() / temperature
    target = F.one_hot(labels, s.shape[1]).bool()

    def binary(z):  # log [p(target), p(not target)]
        total = torch.logsumexp(z, dim=1)
        others = torch.logsumexp(z.masked_fill(target, float("-inf")), dim=1)
        return torch.stack([z[target] - total, others - total], dim=1)

    def non_target(z):  # log-softmax over the classes other than the label
        return F.log_softmax(z[~target].view(len(z), -1), dim=1)

    tckd = F.kl_div(binary(s), binary(t), reduction="batchmean", log_target=True)
    nckd = F.kl_div(non_target(s), non_target(t), reduction="batchmean", log_target=True)
    return tckd * temperature**2, nckd * temperature**2


class Dkd(LossTerm):
    name = "dkd"
    Config = DkdConfig
    in_warmup = False  # a logits term, like kd, which the standard warm-up turns off
    needs_teacher_layers = False

    def loss(self, step):
        tckd, nckd = dkd_parts(step.logits, step.t_logits, step.labels, step.temperature)
        ramp = min((step.epoch + 1) / self.cfg.warmup_epochs, 1.0) if self.cfg.warmup_epochs else 1.0
        return ramp * (self.cfg.alpha * tckd + self.cfg.beta * nckd)


TERM = Dkd
