"""Phased schedules: warm-up on easy examples, distillation, fine-tune; per-phase weights and LR scale."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgedistill.config.pipeline import phase_defaults
from edgedistill.distill.terms import TERMS


@dataclass(frozen=True)
class PhasePlan:
    name: str
    first_epoch: int  # 0-based, inclusive
    last_epoch: int  # exclusive
    alpha: float
    lr_scale: float
    easy_fraction: float | None
    terms: dict[str, float]  # multipliers of the configured weights of the registry's terms, by name


class Schedule:
    """Which phase each epoch is in, what it weighs, and which examples it trains on."""

    def __init__(self, cfg, difficulty: torch.Tensor | None = None):
        """`cfg` is a Distill config; `difficulty` ranks training examples, lower = easier."""
        self.cfg = cfg
        self.difficulty = difficulty
        self.plans: list[PhasePlan] = []
        start, cumulative = 0, 0.0
        phases = cfg.phases()
        for i, phase in enumerate(phases):
            cumulative += phase.fraction
            end = cfg.epochs if i == len(phases) - 1 else max(start + 1, round(cumulative * cfg.epochs))
            end = min(end, cfg.epochs - (len(phases) - 1 - i))  # leave at least one epoch for later phases
            if end <= start:
                continue  # fewer epochs than phases: the later phases win
            merged = {"alpha": cfg.alpha, "lr_scale": 1.0, "easy_fraction": None, **{t: 1.0 for t in TERMS},
                      **phase_defaults(phase.name), **phase.model_dump(exclude_none=True, exclude={"name", "fraction"})}
            self.plans.append(PhasePlan(phase.name, start, end, merged.pop("alpha"), merged.pop("lr_scale"),
                                        merged.pop("easy_fraction"), terms=merged))
            start = end

    def at(self, epoch: int) -> PhasePlan:
        for plan in self.plans:
            if plan.first_epoch <= epoch < plan.last_epoch:
                return plan
        return self.plans[-1]

    def lr_scale(self, epoch: int) -> float:
        return self.at(epoch).lr_scale

    def temperature(self, epoch: int) -> float:
        """Linear annealing from `temperature` to `temperature_end` over training, if asked for."""
        if self.cfg.temperature_end is None or self.cfg.epochs == 1:
            return self.cfg.temperature
        frac = epoch / (self.cfg.epochs - 1)
        return self.cfg.temperature + frac * (self.cfg.temperature_end - self.cfg.temperature)

    def order(self, epoch: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """This epoch's example order: a shuffle, restricted to the easiest share in an easy-first phase."""
        perm = torch.randperm(n, generator=generator)
        fraction = self.at(epoch).easy_fraction
        if fraction is None or self.difficulty is None:
            return perm
        keep = max(1, round(n * fraction))
        easiest = torch.argsort(self.difficulty, stable=True)[:keep]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[easiest] = True
        return perm[mask[perm]]
