"""Classifier reuse (SimKD, Chen et al. 2022, arXiv:2203.14001): the student's final feature, through a trained
projector, goes through the teacher's frozen head; that output learns the teacher's logits under the configured
divergence."""

from __future__ import annotations

from pydantic import Field

from edgedistill.config.device import Strict
from edgedistill.distill.terms import LossTerm


class ClassifierConfig(Strict):
    weight: float = Field(default=1.0, ge=0)
    student_layer: str = Field(default="head", description="the student module whose input is its final feature")
    teacher_head: str = Field(default="head", description="the teacher module that maps features to logits")


class Classifier(LossTerm):
    name = "classifier"
    Config = ClassifierConfig
    in_warmup = False  # the warm-up trains the student's own features first

    def __init__(self, cfg, student, teacher, sample):
        from edgedistill.distill.hooks import resolve
        from edgedistill.distill.mapping import make_adapter, probe_shapes

        super().__init__(cfg, student, teacher, sample)
        self.student_shape = probe_shapes(student, [cfg.student_layer], sample, "input")[cfg.student_layer]
        self.teacher_shape = probe_shapes(teacher, [cfg.teacher_head], sample, "input")[cfg.teacher_head]
        self.adapters["projector"] = make_adapter(self.student_shape, self.teacher_shape)
        self.teacher_head = resolve(teacher, cfg.teacher_head)  # frozen with the teacher; not an adapter
        self.student_inputs, self.teacher_inputs = [cfg.student_layer], [cfg.teacher_head]

    def loss(self, step):
        from edgedistill.distill.mapping import align_spatial

        s, _ = align_spatial(self.adapters["projector"](step.s_in[self.cfg.student_layer]),
                             step.t_in[self.cfg.teacher_head])
        return step.divergence(self.teacher_head(s), step.t_logits)

    def describe(self):
        return {"student_layer": self.cfg.student_layer, "teacher_head": self.cfg.teacher_head,
                "student_shape": list(self.student_shape), "teacher_shape": list(self.teacher_shape)}


TERM = Classifier
