"""Model families written in the project (no torchvision, no timm), looked up by name.

The registry holds import paths, not modules, so that validating a pipeline never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from edgedistill.errors import UserError, unknown_choice

_FAMILIES: dict[str, str] = {
    "resnet": "edgedistill.models.resnet:ResNet",
    "mobilenetv2": "edgedistill.models.mobilenetv2:MobileNetV2",
}


def register_family(name: str, target: str) -> None:
    """Register a family as 'package.module:callable'; the callable takes the arguments of `build_model`."""
    _FAMILIES[name] = target


def family_names() -> list[str]:
    return sorted(_FAMILIES)


def get_family(name: str) -> Callable[..., Any]:
    if name not in _FAMILIES:
        raise UserError(unknown_choice("model family", name, _FAMILIES))
    module, _, attr = _FAMILIES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def build_model(family: str, *, width: float, depth: float, in_channels: int, num_classes: int,
                input_hw: tuple[int, int]) -> Any:
    """Build a model of `family` scaled by width and depth multipliers for the given input."""
    return get_family(family)(width=width, depth=depth, in_channels=in_channels, num_classes=num_classes,
                              input_hw=input_hw)


def count_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
