"""Consistent teaching, or function matching (Beyer et al., "Knowledge distillation: A good teacher is patient
and consistent", CVPR 2022, arXiv:2106.05237): teacher and student see the very same, aggressively augmented
view of each image (random resized crops, flips, mixup), the teacher runs online on it (no cache: every view is
new), and the student matches the teacher's output distribution on it. The paper's point is the pairing of this
with long schedules: it pays off over many epochs, not few.

The term sets the augmentation of distillation (distiller.py reads `augmentation`) and adds the matching loss,
KL(teacher || student) at its own temperature (the paper uses 1). With mixup the views mix two images, so the
true labels no longer describe them: the pipeline requires `distill.alpha: 1` then (teacher only).
"""

from __future__ import annotations

from pydantic import Field

from edgedistill.config.device import Strict
from edgedistill.distill.terms import LossTerm


class ConsistentConfig(Strict):
    weight: float = Field(default=1.0, ge=0)
    temperature: float = Field(default=1.0, ge=0.05, le=100, description="of the matching KL (the paper: 1)")
    crop_area: float = Field(default=0.35, gt=0, le=1, description="random resized crop of this much to all of "
                                                                   "the image's area (1: none)")
    flip: bool = Field(default=False, description="mirror left-right with probability 1/2 (not for digits)")
    turn: bool = Field(default=False, description="turn by a multiple of 90 degrees and mirror top-bottom (images "
                                                  "with no up; square inputs)")
    shift: int = Field(default=0, ge=0, le=64, description="random translation by up to this many pixels")
    mixup: float = Field(default=0.0, ge=0, le=10, description="Beta(mixup, mixup) weight of a second image mixed "
                                                               "into each view; 0: no mixup")


class Consistent(LossTerm):
    name = "consistent"
    Config = ConsistentConfig
    in_warmup = False  # a logits term, like kd
    needs_teacher_layers = False

    def loss(self, step):
        from edgedistill.distill.losses import divergence

        t = self.cfg.temperature
        return divergence(step.logits, step.t_logits, t, "forward_kl", 0.5)


TERM = Consistent
