"""Feature distillation (FitNets-style hints, Romero et al. 2015, arXiv:1412.6550): student layers, through a
trained adapter where widths differ, regress the paired teacher layers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgedistill.config.mapping import LayerMapping
from edgedistill.distill.terms import LayerPairTerm


class FeaturesConfig(LayerMapping):
    weight: float = Field(default=1.0, ge=0)
    loss: Literal["mse", "smooth_l1", "cosine"] = "mse"


def _key(pair) -> str:
    return f"{pair.student}->{pair.teacher}".replace(".", "_")


class Features(LayerPairTerm):
    name = "features"
    Config = FeaturesConfig

    def __init__(self, cfg, student, teacher, sample):
        from edgedistill.distill.mapping import make_adapter

        super().__init__(cfg, student, teacher, sample)
        for pair in self.pairs:
            self.adapters[_key(pair)] = make_adapter(pair.student_shape, pair.teacher_shape)

    def loss(self, step):
        import torch

        from edgedistill.distill.losses import feature_loss
        from edgedistill.distill.mapping import align_spatial

        losses = []
        for pair in self.pairs:
            s, t = align_spatial(self.adapters[_key(pair)](step.s_out[pair.student]), step.t_out[pair.teacher])
            losses.append(feature_loss(s, t, self.cfg.loss))
        return torch.stack(losses).mean()


TERM = Features
