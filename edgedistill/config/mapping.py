"""Which student layers learn from which teacher layers: the config shared by the layer-pair loss terms."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgedistill.config.device import Strict


class LayerMapping(Strict):
    """Modes and pairing rules are described in edgedistill/distill/mapping.py."""

    mapping: Literal["direct", "projection", "depth", "auto"] = "auto"
    pairs: list[tuple[str, str]] | None = Field(default=None, description="explicit [student, teacher] module paths")
    student_layers: list[str] | None = None
    teacher_layers: list[str] | None = None
    depth: Literal["uniform", "last"] | list[int] = "uniform"


def plan_layer_pairs(cfg: LayerMapping, student, teacher, sample) -> list:
    """The layer pairs `cfg` asks for, probed on `sample`."""
    from edgedistill.distill.mapping import plan_pairs

    return plan_pairs(cfg.mapping, student, teacher, sample, pairs=cfg.pairs, student_layers=cfg.student_layers,
                      teacher_layers=cfg.teacher_layers, depth=cfg.depth)


def pair_rows(pairs: list) -> list[dict]:
    """Layer pairs as the manifest and the report show them."""
    return [{"student": p.student, "teacher": p.teacher, "student_shape": list(p.student_shape),
             "teacher_shape": list(p.teacher_shape)} for p in pairs]
