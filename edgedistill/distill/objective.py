"""The distillation objective: every configured loss term, and the adapters those terms train."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.distill.hooks import resolve
from edgedistill.distill.losses import attention_loss, divergence, feature_loss
from edgedistill.distill.mapping import LayerPair, align_spatial, make_adapter, plan_pairs, probe_shapes


def _key(pair: LayerPair) -> str:
    return f"{pair.student}->{pair.teacher}".replace(".", "_")


def _pairs(term, student, teacher, sample) -> list[LayerPair]:
    return plan_pairs(term.mapping, student, teacher, sample, pairs=term.pairs, student_layers=term.student_layers,
                      teacher_layers=term.teacher_layers, depth=term.depth)


class DistillObjective(nn.Module):
    """Holds the layer pairs and adapters; `forward` returns the weighted loss terms by name.

    The adapters are this module's parameters, not the student's: they train alongside the student and
    are left behind when the student is exported.
    """

    def __init__(self, cfg, student: nn.Module, teacher: nn.Module, sample: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.adapters = nn.ModuleDict()
        self.feature_pairs = _pairs(cfg.features, student, teacher, sample) if cfg.features else []
        for pair in self.feature_pairs:
            self.adapters[_key(pair)] = make_adapter(pair.student_shape, pair.teacher_shape)
        self.attention_pairs = _pairs(cfg.attention, student, teacher, sample) if cfg.attention else []
        self.classifier_shapes = None
        self._teacher_head: list[nn.Module] = []  # a list, so the frozen teacher head is not our parameter
        if cfg.classifier:
            c = cfg.classifier
            s_shape = probe_shapes(student, [c.student_layer], sample, "input")[c.student_layer]
            t_shape = probe_shapes(teacher, [c.teacher_head], sample, "input")[c.teacher_head]
            self.classifier_shapes = (s_shape, t_shape)
            self.adapters["classifier"] = make_adapter(s_shape, t_shape)
            self._teacher_head.append(resolve(teacher, c.teacher_head))

    @property
    def student_outputs(self) -> list[str]:
        return [p.student for p in self.feature_pairs + self.attention_pairs]

    @property
    def teacher_outputs(self) -> list[str]:
        return [p.teacher for p in self.feature_pairs + self.attention_pairs]

    @property
    def student_inputs(self) -> list[str]:
        return [self.cfg.classifier.student_layer] if self.cfg.classifier else []

    @property
    def teacher_inputs(self) -> list[str]:
        return [self.cfg.classifier.teacher_head] if self.cfg.classifier else []

    def describe(self) -> dict:
        """The resolved mapping, for the manifest and the report."""
        def rows(pairs):
            return [{"student": p.student, "teacher": p.teacher, "student_shape": list(p.student_shape),
                     "teacher_shape": list(p.teacher_shape)} for p in pairs]

        return {"features": rows(self.feature_pairs), "attention": rows(self.attention_pairs),
                "classifier": None if self.classifier_shapes is None else {
                    "student_layer": self.cfg.classifier.student_layer,
                    "teacher_head": self.cfg.classifier.teacher_head,
                    "student_shape": list(self.classifier_shapes[0]), "teacher_shape": list(self.classifier_shapes[1])},
                "adapter_params": sum(p.numel() for p in self.adapters.parameters())}

    def forward(self, logits, labels, s_out, s_in, t_logits, t_out, t_in, plan, temperature) -> dict:
        cfg, terms = self.cfg, {}
        t_logits = t_logits.detach()  # the teacher's side carries no gradient, as in feature_loss
        if plan.alpha > 0:
            terms["kd"] = plan.alpha * divergence(logits, t_logits, temperature, cfg.divergence, cfg.jsd_beta)
        if plan.alpha < 1:
            terms["ce"] = (1 - plan.alpha) * F.cross_entropy(logits, labels)
        if self.feature_pairs and plan.features * cfg.features.weight > 0:
            losses = []
            for pair in self.feature_pairs:
                s, t = align_spatial(self.adapters[_key(pair)](s_out[pair.student]), t_out[pair.teacher])
                losses.append(feature_loss(s, t, cfg.features.loss))
            terms["features"] = plan.features * cfg.features.weight * torch.stack(losses).mean()
        if self.attention_pairs and plan.attention * cfg.attention.weight > 0:
            losses = [attention_loss(*align_spatial(s_out[p.student], t_out[p.teacher])) for p in self.attention_pairs]
            terms["attention"] = plan.attention * cfg.attention.weight * torch.stack(losses).mean()
        if self.classifier_shapes and plan.classifier * cfg.classifier.weight > 0:
            c = cfg.classifier
            s, _ = align_spatial(self.adapters["classifier"](s_in[c.student_layer]), t_in[c.teacher_head])
            through_teacher = self._teacher_head[0](s)
            terms["classifier"] = plan.classifier * c.weight * divergence(through_teacher, t_logits, temperature)
        return terms
