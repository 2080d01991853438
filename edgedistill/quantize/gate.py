"""The accuracy gate: a quantized artifact ships only if it keeps accuracy, else the next thing is tried.

When an int8 artifact loses more than the allowed accuracy against the float model (measured on the
validation split, so the test split stays unseen), the gate tries in order: another calibration method;
7-bit weights where the format can store them (x86 kernels without VNNI saturate 16-bit pair sums of 8-bit
products: the drop may be this host's kernels, not the model's); keeping the first and last weighted layers in
float; fp16; fp32. Every attempt and its reason is recorded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from edgedistill.precisions import GATE_FALLBACKS, get_precision


@dataclass
class Attempt:
    precision: str
    calibration: str | None
    keep_float: list[str] = field(default_factory=list)
    reduce_range: bool = False
    accuracy: float | None = None
    drop: float | None = None
    passed: bool = False
    reason: str = ""
    path: Path | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out["path"] = None if self.path is None else self.path.name
        return out


@dataclass
class GateResult:
    final: Attempt | None
    attempts: list[Attempt]

    @property
    def fell_back(self) -> bool:
        return self.final is not None and self.final is not self.attempts[0]


Make = Callable[[str, str | None, list[str], Path, bool], Path]  # (precision, calibration, keep_float, out,
#                                                                    reduce_range) -> path
Evaluate = Callable[[Path], float]  # artifact -> validation accuracy


def run_gate(requested: str, *, make: Make, evaluate: Evaluate, reference_accuracy: float, max_drop: float | None,
             calibration: str, other_calibrations: list[str], first_and_last: Callable[[], list[str]],
             workdir: Path, enabled: bool = True, narrow_weights: bool = False) -> GateResult:
    """Produce `requested`, falling back as needed; the final attempt's file is the one to ship.
    `narrow_weights`: the format can store 7-bit weights, tried before layers are kept in float."""
    attempts: list[Attempt] = []

    def attempt(precision: str, calib: str | None, keep: list[str], why: str, narrow: bool = False) -> Attempt:
        label = "-".join(filter(None, [precision, calib, "7bit" if narrow else None, "keepfloat" if keep else None]))
        trial = Attempt(precision, calib, keep, narrow, reason=why)
        try:
            trial.path = make(precision, calib, keep, workdir / f"attempt-{len(attempts) + 1}-{label}", narrow)
            trial.accuracy = evaluate(trial.path)
            trial.drop = reference_accuracy - trial.accuracy
            # fp32 is the float model itself: the gate judges only what quantization changed.
            trial.passed = precision == "fp32" or max_drop is None or not enabled or trial.drop <= max_drop
        except Exception as exc:  # noqa: BLE001 - a failed attempt is recorded and the next one tried
            trial.reason += f"; failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        attempts.append(trial)
        return trial

    asked = get_precision(requested)
    first = attempt(requested, calibration if asked.needs_calibration else None, [], "as requested")
    if first.passed or requested == "fp32":
        return GateResult(first, attempts)
    limit = f"drop {first.drop:.2%} > {max_drop:.2%}" if first.drop is not None else "conversion failed"
    steps: list[tuple[str, str | None, bool, str, bool]] = []
    if asked.needs_calibration:
        steps += [(requested, other, False, f"{limit} with {calibration}: try {other} calibration", False)
                  for other in other_calibrations if other != calibration]
        if narrow_weights:
            steps.append((requested, "best", False, f"{limit}: try 7-bit weights (reduce_range), which x86 kernels "
                                                    "without VNNI add up without saturating", True))
    if asked.keep_float_retry:
        steps.append((requested, "best", True, f"{limit}: keep the first and last layers in float", False))
    steps += [(p, None, False, f"{limit}: fall back to {p}", False) for p in GATE_FALLBACKS if p != requested]
    for precision, calib, keep_float, why, narrow in steps:
        if calib == "best":  # the calibration that did best so far
            calib = _best(attempts).calibration
        trial = attempt(precision, calib, first_and_last() if keep_float else [], why, narrow)
        if trial.passed:
            return GateResult(trial, attempts)
    return GateResult(None, attempts)


def _best(attempts: list[Attempt]) -> Attempt:
    scored = [a for a in attempts if a.accuracy is not None and get_precision(a.precision).needs_calibration]
    return max(scored, key=lambda a: a.accuracy) if scored else attempts[0]
