"""Layer mapping between a student and a teacher of different width and depth.

Modes:
- direct: pairs whose feature shapes already agree;
- projection: pairs whose channel counts differ, bridged by a 1x1 conv (or linear) adapter on the
  student side that trains with the student and is dropped at export;
- depth: k student layers onto n teacher layers, `uniform`, `last`, or an explicit list of teacher indices;
- auto: each student stage to the teacher stage of the same spatial size closest in relative depth.
Spatial sizes are aligned by average-pooling the larger map to the smaller one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.distill.hooks import FeatureHooks, unwrap
from edgedistill.errors import UserError

MODES = ("direct", "projection", "depth", "auto")


@dataclass(frozen=True)
class LayerPair:
    student: str
    teacher: str
    student_shape: tuple[int, ...]  # per sample: (C, H, W) or (D,)
    teacher_shape: tuple[int, ...]

    @property
    def width_ratio(self) -> float:
        return self.teacher_shape[0] / self.student_shape[0]


POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def stage_layers(model: nn.Module, sample: torch.Tensor | None = None) -> list[str]:
    """The default layers to distill: `stages.i` when the model has them; else, for a model we did not write
    (a torchvision-style ResNet has conv1, bn1, relu, maxpool, layer1..4, avgpool, fc), the last module to
    produce each spatial resolution on one forward of `sample`; without a sample, its top-level children."""
    inner = unwrap(model)
    names = [n for n, _ in inner.named_modules() if n.count(".") == 1 and n.startswith("stages.")]
    if names:
        return names
    if sample is not None:
        traced = last_module_per_resolution(inner, sample)
        if traced:
            return traced
    return [n for n, _ in inner.named_children()][:-1]


@torch.no_grad()
def last_module_per_resolution(model: nn.Module, sample: torch.Tensor) -> list[str]:
    """For each spatial size a forward of `sample` passes through, the module that finishes last with a map of
    that size (a block's container finishes after its layers, so whole blocks are chosen), in forward order.
    Pooling layers, and modules called more than once (a shared activation), are left out: a hook on those
    would not say which call it saw."""
    finished: list[tuple[str, tuple[int, int]]] = []
    calls: dict[str, int] = {}

    def hook(name):
        def record(module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, torch.Tensor) and output.dim() == 4 and not isinstance(module, POOLS):
                finished.append((name, tuple(output.shape[-2:])))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    was_training = model.training
    model.eval()
    try:
        model(sample)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    last: dict[tuple[int, int], tuple[int, str]] = {}
    for order, (name, size) in enumerate(finished):
        if calls[name] == 1:
            last[size] = (order, name)
    return [name for _, name in sorted(last.values())]


@torch.no_grad()
def probe_shapes(model: nn.Module, paths: list[str], sample: torch.Tensor, capture: str = "output") -> dict:
    """Per-sample output shapes of `paths` on one forward of `sample` (eval mode, state restored)."""
    was_training = model.training
    model.eval()
    with FeatureHooks(model, paths, capture) as hooks:
        model(sample)
        shapes = {p: tuple(t.shape[1:]) for p, t in hooks.collect("probe").items()}
    model.train(was_training)
    return shapes


def depth_indices(k: int, n: int, strategy: str | list[int]) -> list[int]:
    """Teacher index for each of k student layers over n teacher layers."""
    if isinstance(strategy, list):
        if len(strategy) != k or not all(0 <= i < n for i in strategy):
            raise UserError(f"depth mapping list {strategy}: need {k} teacher indices in 0..{n - 1}")
        return strategy
    if strategy == "uniform":
        return [max(0, round((i + 1) * n / k) - 1) for i in range(k)]
    if strategy == "last":
        return [max(0, n - k + i) for i in range(k)]
    raise UserError(f"unknown depth strategy {strategy!r} (valid: uniform, last, or a list of indices)")


def plan_pairs(mode: str, student: nn.Module, teacher: nn.Module, sample: torch.Tensor, *,
               pairs: list[tuple[str, str]] | None = None, student_layers: list[str] | None = None,
               teacher_layers: list[str] | None = None, depth: str | list[int] = "uniform") -> list[LayerPair]:
    """Resolve a mapping mode to concrete (student, teacher) layer pairs with their feature shapes."""
    s_layers = student_layers or stage_layers(student, sample)
    t_layers = teacher_layers or stage_layers(teacher, sample)
    if pairs:
        s_layers, t_layers = [p[0] for p in pairs], [p[1] for p in pairs]
    s_shapes = probe_shapes(student, s_layers, sample)
    t_shapes = probe_shapes(teacher, t_layers, sample)
    if mode in ("direct", "projection"):
        if pairs is None and len(s_layers) != len(t_layers):
            raise UserError(f"{mode} mapping pairs layers one to one, but the student has {len(s_layers)} "
                            f"and the teacher {len(t_layers)}; use mapping: depth or auto, or list pairs")
        chosen = list(zip(s_layers, t_layers))
    elif mode == "depth":
        chosen = [(s, t_layers[i]) for s, i in zip(s_layers, depth_indices(len(s_layers), len(t_layers), depth))]
    elif mode == "auto":
        chosen = [(s, _closest(s, i, len(s_layers), s_shapes, t_layers, t_shapes)) for i, s in enumerate(s_layers)]
    else:
        raise UserError(f"unknown mapping mode {mode!r} (valid: {', '.join(MODES)})")
    result = [LayerPair(s, t, s_shapes[s], t_shapes[t]) for s, t in chosen]
    if mode == "direct":
        for p in result:
            if p.student_shape != p.teacher_shape:
                raise UserError(f"direct mapping needs equal shapes: student {p.student} {p.student_shape} vs "
                                f"teacher {p.teacher} {p.teacher_shape}; use mapping: projection")
    return result


def _closest(s: str, i: int, k: int, s_shapes: dict, t_layers: list[str], t_shapes: dict) -> str:
    rel = (i + 1) / k

    def cost(j: int) -> float:
        t = t_layers[j]
        same_size = s_shapes[s][1:] == t_shapes[t][1:]
        return abs(rel - (j + 1) / len(t_layers)) + (0 if same_size else 1)

    return t_layers[min(range(len(t_layers)), key=cost)]


def make_adapter(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """Student-side projection to the teacher's channels: 1x1 conv for maps, linear for vectors."""
    cs, ct = student_shape[0], teacher_shape[0]
    if cs == ct:
        return nn.Identity()
    if len(student_shape) == 3:
        return nn.Conv2d(cs, ct, kernel_size=1, bias=False)
    return nn.Linear(cs, ct, bias=False)


def align_spatial(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool whichever map is larger down to the other's height and width."""
    if student.dim() != 4 or student.shape[-2:] == teacher.shape[-2:]:
        return student, teacher
    h = min(student.shape[-2], teacher.shape[-2])
    w = min(student.shape[-1], teacher.shape[-1])
    return F.adaptive_avg_pool2d(student, (h, w)), F.adaptive_avg_pool2d(teacher, (h, w))
