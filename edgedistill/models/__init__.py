"""Model families written in the project (no torchvision, no timm), looked up by name.

The registry holds import paths, not modules, so that validating a pipeline never imports torch.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable

from edgedistill.errors import UserError, unknown_choice

_FAMILIES: dict[str, str] = {
    "resnet": "edgedistill.models.resnet:ResNet",
    "mobilenetv2": "edgedistill.models.mobilenetv2:MobileNetV2",
}


def register_family(name: str, target: str) -> None:
    """Register a family as 'package.module:callable'; the callable takes the arguments of `build_model`."""
    _FAMILIES[name] = target


# A user's own model: `package.module:function`, imported only when a model is built, never on validation.
FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def family_names() -> list[str]:
    return sorted(_FAMILIES)


def is_factory(name: str) -> bool:
    return bool(FACTORY.match(name))


def get_family(name: str) -> Callable[..., Any]:
    """A registered family's builder, or the user factory `package.module:function` the pipeline names
    (only that module is imported, and only here)."""
    if name in _FAMILIES:
        target = _FAMILIES[name]
    elif is_factory(name):
        target = name
    else:
        raise UserError(unknown_choice("model family", name, _FAMILIES) + "; or a factory as package.module:function")
    module, _, attr = target.partition(":")
    try:
        builder = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise UserError(f"family {name!r}: cannot import module {module!r} ({exc})") from None
    except AttributeError:
        raise UserError(f"family {name!r}: module {module!r} has no {attr!r}") from None
    if not callable(builder):
        raise UserError(f"family {name!r}: {attr!r} is not callable")
    return builder


def build_model(family: str, *, width: float, depth: float, in_channels: int, num_classes: int,
                input_hw: tuple[int, int]) -> Any:
    """Build a model of `family` scaled by width and depth multipliers for the given input; a user factory
    is called with these same keyword arguments and returns a torch.nn.Module."""
    return get_family(family)(width=width, depth=depth, in_channels=in_channels, num_classes=num_classes,
                              input_hw=input_hw)


def count_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
