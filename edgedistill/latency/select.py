"""Student selection: the candidate of a family that fits every budget of the device, by an objective.

Candidates are the family's width and depth multipliers (the input resolution is the data's: the
bundled data is 8x8 and cannot be scaled down further). Each is costed, predicted on the device at its
deployment format and precision, and checked against the budgets. Among those that fit, the objective
picks: `largest` (most parameters: the most capacity the budgets allow, so the most accuracy kept),
`smallest` (fewest parameters) or `fastest` (lowest predicted p90); OBJECTIVES holds the order of each.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgedistill.cost import model_cost
from edgedistill.errors import UserError
from edgedistill.latency.predictor import LatencyPredictor
from edgedistill.precisions import get_precision

WIDTHS = (0.0625, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
DEPTHS = (0.5, 1.0, 2.0)
# Objective -> (what the rank says, the sort key among fitting candidates).
OBJECTIVES = {
    "largest": ("most parameters; on a tie, lower predicted p90 latency, then smaller width",
                lambda c: (-c.params, c.p90_ms, c.width, c.depth)),
    "smallest": ("fewest parameters; on a tie, lower predicted p90 latency, then smaller width",
                 lambda c: (c.params, c.p90_ms, c.width, c.depth)),
    "fastest": ("lowest predicted p90 latency; on a tie, more parameters, then smaller width",
                lambda c: (c.p90_ms, -c.params, c.width, c.depth)),
}
TIE_BREAK = OBJECTIVES["largest"][0]


def storage_bytes_per_value(precision: str) -> float:
    return get_precision(precision).bytes_per_weight


@dataclass
class Candidate:
    family: str
    width: float
    depth: float
    params: int
    macs: int
    size_mb: float
    p50_ms: float
    p90_ms: float
    ram_mb: float
    breaks: list[str]  # budgets it breaks, as "max_latency_p90_ms 12.1 > 10"; empty when it fits

    @property
    def fits(self) -> bool:
        return not self.breaks

    @property
    def label(self) -> str:
        return f"{self.family} ×{self.width:g} depth ×{self.depth:g}"

    def row(self) -> dict:
        return {**asdict(self), "label": self.label, "fits": self.fits}


@dataclass
class Selection:
    device: str
    format: str
    precision: str
    predictor: str  # calibrated | datasheet
    candidates: list[Candidate]  # ranked: fitting ones first, best first
    chosen: Candidate | None
    tie_break: str = TIE_BREAK
    excluded: str = ""  # why some of the space was left out (e.g. not smaller than the teacher)

    def to_dict(self) -> dict:
        return {"device": self.device, "format": self.format, "precision": self.precision,
                "predictor": self.predictor, "tie_break": self.tie_break, "excluded": self.excluded,
                "chosen": self.chosen.row() if self.chosen else None,
                "candidates": [c.row() for c in self.candidates]}


def evaluate(family: str, width: float, depth: float, *, in_channels: int, num_classes: int,
             input_hw: tuple[int, int], predictor: LatencyPredictor, fmt: str, precision: str, budgets) -> Candidate:
    from edgedistill.models import build_model

    model = build_model(family, width=width, depth=depth, in_channels=in_channels, num_classes=num_classes,
                        input_hw=input_hw)
    cost = model_cost(model, (in_channels, *input_hw))
    predicted = predictor.predict(cost, fmt, precision)
    size_mb = cost.params * storage_bytes_per_value(precision) / 2**20
    breaks = []
    for budget, value in (("max_model_mb", size_mb), ("max_latency_p90_ms", predicted.p90_ms),
                          ("max_ram_mb", predicted.ram_mb)):
        limit = getattr(budgets, budget)
        if limit is not None and value > limit:
            breaks.append(f"{budget} {value:.3g} > {limit:g}")
    return Candidate(family, width, depth, cost.params, cost.macs, size_mb, predicted.p50_ms, predicted.p90_ms,
                     predicted.ram_mb, breaks)


def rank(candidates: list[Candidate], objective: str = "largest") -> list[Candidate]:
    """Fitting candidates first, each group in the objective's order (OBJECTIVES)."""
    order = OBJECTIVES[objective][1]
    return sorted(candidates, key=lambda c: (not c.fits, *order(c)))


def select(family: str, *, device, predictor: LatencyPredictor, budgets, in_channels: int, num_classes: int,
           input_hw: tuple[int, int], fmt: str, precision: str, max_params: int | None = None,
           max_params_why: str = "", widths=WIDTHS, depths=DEPTHS, objective: str = "largest") -> Selection:
    """Every candidate ranked, and the chosen one (None when nothing fits). Candidates above `max_params`
    are left out of the space, `max_params_why` saying why."""
    candidates = [evaluate(family, w, d, in_channels=in_channels, num_classes=num_classes, input_hw=input_hw,
                           predictor=predictor, fmt=fmt, precision=precision, budgets=budgets)
                  for w in widths for d in depths]
    excluded = ""
    if max_params is not None:
        kept = [c for c in candidates if c.params <= max_params]
        if len(kept) < len(candidates):
            excluded = (f"{len(candidates) - len(kept)} candidates above {max_params:,} parameters left out: "
                        f"{max_params_why}")
        candidates = kept
    ranked = rank(candidates, objective)
    chosen = ranked[0] if ranked and ranked[0].fits else None
    return Selection(device.name, fmt, precision, predictor.source(fmt, precision), ranked, chosen,
                     tie_break=f"{objective}: {OBJECTIVES[objective][0]}", excluded=excluded)


def nothing_fits(selection: Selection) -> UserError:
    """The error when no candidate fits: the smallest one's numbers and the budgets it breaks."""
    if not selection.candidates:
        return UserError(f"no candidates to choose from for {selection.device}: {selection.excluded}")
    smallest = min(selection.candidates, key=lambda c: (c.params, c.p90_ms))
    return UserError(f"no student fits {selection.device}: even the smallest candidate, {smallest.label} "
                     f"({smallest.params:,} params, {smallest.size_mb:.3g} MB, predicted p90 {smallest.p90_ms:.3g} ms, "
                     f"RAM {smallest.ram_mb:.3g} MB), breaks {'; '.join(smallest.breaks)}")


def deployment(spec, device) -> tuple[str, str]:
    """The format and precision the student is judged in: the device's defaults, the format only when the
    pipeline exports it (else the pipeline's first format)."""
    formats = spec.export.formats
    return (device.default_format if device.default_format in formats else formats[0]), device.default_precision


def select_for_pipeline(spec, device, profile_path, budgets, *, family: str | None = None, fmt: str | None = None,
                        precision: str | None = None, input_shape: tuple[int, int, int] | None = None,
                        max_params: int | None = None, objective: str | None = None) -> tuple[Selection, object]:
    """Selection for a pipeline's data and teacher on `device`; also returns the calibration used (or None)."""
    from edgedistill.data import load_dataset
    from edgedistill.latency.calibration import predictor_for
    from edgedistill.models import FOREIGN_TEACHERS, build_model, count_params

    data = load_dataset(spec.data, seed=spec.seed)
    c, h, w = input_shape or data.input_shape
    shape = dict(in_channels=c, num_classes=data.num_classes, input_hw=(h, w))
    t = spec.teacher
    if t.kind in FOREIGN_TEACHERS:
        from edgedistill.models.teachers import load_foreign, parameter_count

        teacher_params = parameter_count(load_foreign(t.kind, t.path))
    else:
        teacher_params = count_params(build_model(t.family, width=t.width, depth=t.depth, **shape))
    default_fmt, default_precision = deployment(spec, device)
    predictor, calibration = predictor_for(device, profile_path)
    selection = select(family or spec.student.family, device=device, predictor=predictor, budgets=budgets,
                       fmt=fmt or default_fmt, precision=precision or default_precision,
                       max_params=max_params or int(teacher_params * spec.student.max_param_ratio),
                       max_params_why="--max-params" if max_params else f"student.max_param_ratio "
                                      f"{spec.student.max_param_ratio:g} of the teacher's {teacher_params:,}",
                       objective=objective or spec.student.objective, **shape)
    return selection, calibration


def predictor_note(selection, calibration, device) -> str:
    """One line on where the predictions come from, and how good they are."""
    from edgedistill.latency.predictor import cost_precision
    from edgedistill.latency.references import reference_scales

    key = f"{selection.format}/{selection.precision}"
    if selection.predictor == "calibrated":
        q = calibration.fits[key].quality
        return (f"calibrated on {calibration.created[:10]} ({calibration.target}, {calibration.threads} threads); "
                f"{key} within ±20 % on {q['within_20']:.0%} of {q['models']} calibration models")
    why = "no calibration file" if calibration is None else f"the calibration has no {key}"
    if selection.predictor == "published":
        scaled = reference_scales(device)[cost_precision(selection.precision)]
        n = len(scaled.references)
        error = f"±{scaled.max_error:.0%} on them" if n > 1 else "one measurement: met exactly, its error unknown"
        return (f"calibrated on {n} published measurement{'s' * (n > 1)} ({error}; {why}): the roofline "
                f"×{scaled.factor:.3g} — {'; '.join(scaled.references)}. Models unlike them "
                "(far smaller or larger) are predicted less well; `edgedistill calibrate` on the device measures.")
    return (f"datasheet figures ({why}): peak throughput and bandwidth with no overheads, a lower bound on latency; "
            "RAM counts the model only. Calibrate the device (edgedistill calibrate) for measured coefficients.")
