"""Feature hooks addressed by module path on the unwrapped model.

A DDP or DataParallel wrapper adds `.module` (and a `module.` prefix to every path); paths are resolved on
the inner model, so the same pipeline works wrapped or not. Every hook must fire on every step: a hook
that stays silent (a feature loss that would read 0 without complaint) stops training with the path that did not
fire.
"""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.errors import StageFailed, UserError, unknown_choice


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel (or any wrapper exposing `.module`)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) or (
            type(model).__name__.endswith("DistributedDataParallel") and hasattr(model, "module")):
        model = model.module
    return model


def resolve(model: nn.Module, path: str) -> nn.Module:
    """The submodule at `path` (e.g. 'stages.1'), with any 'module.' prefix ignored; clear error otherwise."""
    inner = unwrap(model)
    while path.startswith("module."):
        path = path.removeprefix("module.")
    modules = dict(inner.named_modules())
    if path not in modules:
        names = [n for n in modules if n and n.count(".") <= 1]
        raise UserError(unknown_choice(f"layer of {type(inner).__name__}", path, names))
    return modules[path]


class FeatureHooks:
    """Captures the output (or, with capture='input', the first input) of named modules on each forward."""

    def __init__(self, model: nn.Module, paths: list[str], capture: str = "output", only_training: bool = False):
        """`only_training`: record only forwards in training mode, so evaluation passes leave nothing behind
        that could hide a hook that did not fire in the next training step."""
        self.paths = list(dict.fromkeys(paths))
        self.only_training = only_training
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        for path in self.paths:
            module = resolve(model, path)
            if capture == "input":
                self._handles.append(module.register_forward_pre_hook(self._store_input(path)))
            else:
                self._handles.append(module.register_forward_hook(self._store_output(path)))

    def _store_output(self, path):
        def hook(module, _inputs, output):
            if module.training or not self.only_training:
                self.features[path] = output

        return hook

    def _store_input(self, path):
        def hook(module, inputs):
            if module.training or not self.only_training:
                self.features[path] = inputs[0]

        return hook

    def reset(self) -> None:
        self.features = {}

    def collect(self, step: str = "") -> dict[str, torch.Tensor]:
        """This step's features; raises when a hook did not fire, then clears for the next step."""
        missing = [p for p in self.paths if p not in self.features]
        if missing:
            raise StageFailed(f"feature hook on '{missing[0]}' did not fire{' at ' + step if step else ''}; "
                              "the layer is not on the forward path")
        out, self.features = self.features, {}
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "FeatureHooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
