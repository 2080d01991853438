"""Attention transfer (Zagoruyko & Komodakis 2017, arXiv:1612.03928): the student's spatial attention maps match
the paired teacher layers'."""

from __future__ import annotations

from pydantic import Field

from edgedistill.config.mapping import LayerMapping
from edgedistill.distill.terms import LayerPairTerm


class AttentionConfig(LayerMapping):
    weight: float = Field(default=1000.0, ge=0, description="beta of Zagoruyko & Komodakis (their code: 1000)")


class Attention(LayerPairTerm):
    name = "attention"
    Config = AttentionConfig

    def loss(self, step):
        import torch

        from edgedistill.distill.losses import attention_loss
        from edgedistill.distill.mapping import align_spatial

        return torch.stack([attention_loss(*align_spatial(step.s_out[p.student], step.t_out[p.teacher]))
                            for p in self.pairs]).mean()


TERM = Attention
