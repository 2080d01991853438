"""Saving and loading models as safetensors weights plus a JSON description of the architecture.

Loading never runs code from a file: safetensors, or `torch.load(weights_only=True)` for .pt/.pth.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from edgedistill.errors import UserError
from edgedistill.fileio import atomic_output, atomic_write_json


@dataclass(frozen=True)
class ArchInfo:
    family: str
    width: float
    depth: float
    in_channels: int
    num_classes: int
    input_hw: tuple[int, int]
    class_names: list[str]

    def build(self):
        from edgedistill.models import build_model

        return build_model(self.family, width=self.width, depth=self.depth, in_channels=self.in_channels,
                           num_classes=self.num_classes, input_hw=tuple(self.input_hw))

    def save(self, path: Path) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> "ArchInfo":
        raw = json.loads(path.read_text())
        raw["input_hw"] = tuple(raw["input_hw"])
        return cls(**raw)


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    # contiguous clones: safetensors refuses shared or strided storage.
    with atomic_output(path) as tmp:
        save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(tmp))


def read_state_dict(path: Path) -> dict:
    """A state dict from .safetensors, or from .pt/.pth with weights_only=True (no pickled code runs)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the user's file, reported in one line
        raise UserError(f"{path}: not a loadable weights file: {' '.join(str(exc).split())[:300]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def load_weights(model, path: Path) -> None:
    """Load weights strictly; a mismatch names the file and the first missing or unexpected keys."""
    state = read_state_dict(path)
    # A DDP checkpoint prefixes every key with 'module.'; the weights are the same.
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape of {k} is {tuple(state[k].shape)}, model has {tuple(expected[k].shape)}")
        raise UserError(f"{path}: weights do not match the architecture ({'; '.join(parts)}); "
                        "check teacher.family, width and depth")
    model.load_state_dict(state)
