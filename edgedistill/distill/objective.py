"""The distillation objective: the logits terms every run has (kd and ce, split by alpha) and every configured
term of the registry (edgedistill/distill/terms/), with the adapters those terms train."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.distill.losses import divergence
from edgedistill.distill.terms import TERMS, LossTerm, Step


class DistillObjective(nn.Module):
    """Plans each configured term once; `forward` returns the weighted loss terms by name.

    The adapters are this module's parameters, not the student's: they train alongside the student and
    are left behind when the student is exported.
    """

    def __init__(self, cfg, student: nn.Module, teacher: nn.Module, sample: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.terms: list[LossTerm] = [term(getattr(cfg, name), student, teacher, sample)
                                      for name, term in TERMS.items() if getattr(cfg, name) is not None]
        self.adapters = nn.ModuleDict({t.name: t.adapters for t in self.terms if len(t.adapters)})

    def _hooks(self, kind: str) -> list[str]:
        return list(dict.fromkeys(path for t in self.terms for path in getattr(t, kind)))

    @property
    def student_outputs(self) -> list[str]:
        return self._hooks("student_outputs")

    @property
    def teacher_outputs(self) -> list[str]:
        return self._hooks("teacher_outputs")

    @property
    def student_inputs(self) -> list[str]:
        return self._hooks("student_inputs")

    @property
    def teacher_inputs(self) -> list[str]:
        return self._hooks("teacher_inputs")

    @property
    def names(self) -> list[str]:
        """The loss terms this objective can return, in order."""
        return (["kd"] if self.cfg.alpha > 0 else []) + (["ce"] if self.cfg.alpha < 1 else []) + [
            t.name for t in self.terms]

    def describe(self) -> dict:
        """What each term resolved to (layer pairs, shapes), for the manifest and the report."""
        return {**{t.name: t.describe() for t in self.terms},
                "adapter_params": sum(p.numel() for p in self.adapters.parameters())}

    def forward(self, logits, labels, s_out, s_in, t_logits, t_out, t_in, plan, temperature, epoch: int = 0) -> dict:
        cfg, terms = self.cfg, {}
        t_logits = t_logits.detach()  # the teacher's side carries no gradient
        if plan.alpha > 0:
            terms["kd"] = plan.alpha * divergence(logits, t_logits, temperature, cfg.divergence, cfg.jsd_beta)
        if plan.alpha < 1:
            terms["ce"] = (1 - plan.alpha) * F.cross_entropy(logits, labels)
        step = Step(logits, labels, t_logits, s_out, s_in, t_out, t_in, temperature, epoch, cfg)
        for term in self.terms:
            weight = plan.terms[term.name] * term.cfg.weight
            if weight > 0:
                terms[term.name] = weight * term.loss(step)
        return terms
