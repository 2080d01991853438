"""The optional loss terms of distillation as one registry: every module in this package declares one `TERM`,
a `LossTerm` subclass. Its `name` is its section under `distill:` (of the `Config` it declares), its multiplier
in schedule phases, its entry in the stage's metrics and in the report's layer mapping. The pipeline schema
(config/pipeline.py), the schedule, the objective and the distill stage read `TERMS`; adding a term is one
module here plus its tests.

The logits terms that every run has (`kd`, weighted by `alpha`, and `ce`, by 1 - alpha) are not in it: they
are the objective's base. Term modules import torch only inside their methods, so that reading a pipeline
file stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from edgedistill.config.device import Strict

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class Step:
    """What one training step offers a term: the student's logits and hooked layers, the teacher's (detached),
    the labels, this epoch's temperature, and the distillation config (for `divergence`)."""

    logits: torch.Tensor
    labels: torch.Tensor
    t_logits: torch.Tensor
    s_out: dict[str, torch.Tensor]  # outputs of the student layers in `student_outputs`
    s_in: dict[str, torch.Tensor]  # first inputs of those in `student_inputs`
    t_out: dict[str, torch.Tensor]
    t_in: dict[str, torch.Tensor]
    temperature: float
    epoch: int  # 0-based
    distill: Any  # the Distill config

    def divergence(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """The configured divergence (forward_kl, reverse_kl, jsd) at this step's temperature."""
        from edgedistill.distill.losses import divergence

        return divergence(student_logits, teacher_logits, self.temperature, self.distill.divergence,
                          self.distill.jsd_beta)


class LossTerm:
    """One loss term: planned once from the two models, then asked for its (unweighted) loss at every step.

    Subclasses set `name`, `Config` (a pydantic model with a `weight` field) and `in_warmup`, and fill the
    hook lists and `adapters` in `__init__`. Adapters train with the student and are not exported.
    """

    name: ClassVar[str]
    Config: ClassVar[type[Strict]]
    in_warmup: ClassVar[bool] = True  # whether the standard schedule's warm-up keeps it (fine-tune drops every term)
    # Whether it reads the teacher's layers (hooks, its head): a compiled teacher (ONNX, TorchScript, a
    # torch.export program) gives logits only.
    needs_teacher_layers: ClassVar[bool] = True

    def __init__(self, cfg, student: nn.Module, teacher: nn.Module, sample: torch.Tensor):
        from torch import nn

        self.cfg = cfg
        self.adapters = nn.ModuleDict()
        self.student_outputs: list[str] = []  # module paths whose outputs the loss reads (FeatureHooks)
        self.teacher_outputs: list[str] = []  # ... of the teacher: these are cached with its logits
        self.student_inputs: list[str] = []  # module paths whose first input the loss reads
        self.teacher_inputs: list[str] = []

    def loss(self, step: Step) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> object:
        """What this term resolved to (layer pairs, shapes), for the manifest and the report."""
        return None


class LayerPairTerm(LossTerm):
    """A term over pairs of student and teacher layers (its Config is a config.mapping.LayerMapping): the pairs
    are planned from the two models, their outputs hooked, and listed by `describe`."""

    def __init__(self, cfg, student, teacher, sample):
        from edgedistill.config.mapping import plan_layer_pairs

        super().__init__(cfg, student, teacher, sample)
        self.pairs = plan_layer_pairs(cfg, student, teacher, sample)
        self.student_outputs = [p.student for p in self.pairs]
        self.teacher_outputs = [p.teacher for p in self.pairs]

    def describe(self):
        from edgedistill.config.mapping import pair_rows

        return pair_rows(self.pairs)


def _discover() -> dict[str, type[LossTerm]]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        term = importlib.import_module(f"{__name__}.{info.name}").TERM
        found[term.name] = term
    return found


TERMS: dict[str, type[LossTerm]] = _discover()
