"""Model families written in the project (no torchvision, no timm), looked up by name.

The registry holds import paths, not modules, so that validating a pipeline never imports torch.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from edgedistill.errors import UserError, unknown_choice

_FAMILIES: dict[str, str] = {
    "resnet": "edgedistill.models.resnet:ResNet",
    "mobilenetv2": "edgedistill.models.mobilenetv2:MobileNetV2",
    # The published 224x224 designs (models/mobilenet.py); the two above are for small inputs.
    "mobilenet_v2": "edgedistill.models.mobilenet:mobilenet_v2",
    "mobilenet_v3_large": "edgedistill.models.mobilenet:mobilenet_v3_large",
    "mobilenet_v3_small": "edgedistill.models.mobilenet:mobilenet_v3_small",
    "efficientnet_lite0": "edgedistill.models.mobilenet:efficientnet_lite0",
}


# Teachers from other frameworks, each with whether its layers can be hooked by name (feature, attention and
# classifier terms need that; compiled graphs give logits only). models/teachers.py has their loaders; an
# arch.json may name these as its family: they are loaded from the pipeline's teacher.path, never built.
FOREIGN_TEACHERS = {"huggingface": True, "torchscript": False, "exported": False, "onnx": False}


def register_family(name: str, target: str) -> None:
    """Register a family as 'package.module:callable'; the callable takes the arguments of `build_model`."""
    _FAMILIES[name] = target


# A user's own model: `package.module:function`, imported only when a model is built, never on validation.
FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


# What `build_model` passes to a family's builder.
FACTORY_ARGUMENTS = ("width", "depth", "in_channels", "num_classes", "input_hw")


def family_names() -> list[str]:
    return sorted(_FAMILIES)


def is_factory(name: str) -> bool:
    return bool(FACTORY.match(name))


def factory_source(family: str) -> Path | None:
    """The file that defines a user factory `package.module:function`, found in the working folder or on
    sys.path without importing anything."""
    if not is_factory(family):
        return None
    parts = family.partition(":")[0].split(".")
    for entry in [os.getcwd(), *sys.path]:
        base = Path(entry or ".", *parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve()
    return None


def check_factory(family: str) -> str | None:
    """What is wrong with a user factory, read from its source without running it; None when it looks right
    (or is a compiled module, which cannot be read)."""
    module, _, attr = family.partition(":")
    source = factory_source(family)
    if source is None:
        found = importlib.util.find_spec(module.split(".")[0]) is not None
        return None if found else (f"cannot find module {module!r} in the working folder ({os.getcwd()}) or on "
                                   "the Python path")
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
        return f"{source}: cannot be read as Python ({exc})"
    defined = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)}
    imported = {(a.asname or a.name).split(".")[0] for node in tree.body
                if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
    if attr not in defined and attr not in assigned | imported:
        return f"{source} defines no {attr!r}" + (f" (it defines {', '.join(sorted(defined))})" if defined else "")
    node = defined.get(attr)
    if isinstance(node, ast.FunctionDef) and not node.args.kwarg:
        names = {a.arg for a in node.args.args + node.args.kwonlyargs}
        missing = sorted(set(FACTORY_ARGUMENTS) - names)
        if missing:
            return (f"{source}: {attr}() takes no {', '.join(missing)}; a factory is called with "
                    f"{', '.join(FACTORY_ARGUMENTS)} (or takes **kwargs)")
    return None


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
    if name not in _FAMILIES and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m edgedistill` does: the user's module beside them
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
