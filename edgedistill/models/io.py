"""Saving and loading models as safetensors weights plus a JSON description of the architecture.

Loading never runs code from a file: safetensors, or `torch.load(weights_only=True)` for .pt/.pth.
"""

from __future__ import annotations

import json
from collections.abc import Collection
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
    def load(cls, path: Path, factories: Collection[str] | bool = ()) -> "ArchInfo":
        """An arch.json, checked field by field. Its family must be a registered one, or a user factory in
        `factories` (the ones the pipeline names), or any factory if `factories` is True (--allow-factory):
        an arch.json is data, and naming `module:function` in it must not import code by itself."""
        from edgedistill.config.loading import read_text_file
        from edgedistill.models import FOREIGN_TEACHERS, family_names, is_factory

        try:
            raw = json.loads(read_text_file(path, 1 << 20, "arch.json"))
        except (ValueError, RecursionError) as exc:
            raise UserError(f"{path}: not valid JSON ({' '.join(str(exc).split())[:200]})") from None
        if not isinstance(raw, dict) or set(raw) != set(cls.__dataclass_fields__):
            keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise UserError(f"{path}: expected the keys {', '.join(sorted(cls.__dataclass_fields__))}, got {keys}")
        problems = [f"{key}: {why}" for key, why in _arch_problems(raw)]
        if problems:
            raise UserError("\n".join(f"{path}: {p}" for p in problems))
        family = raw["family"]
        known = family in family_names() or family in FOREIGN_TEACHERS
        if not known and not (factories is True or family in (factories or ())):
            what = ("a user factory, imported only when the pipeline names it (from outside a run folder) or with "
                    "--allow-factory") if is_factory(family) else f"unknown (valid: {', '.join(family_names())})"
            raise UserError(f"{path}: family: {family!r} is {what}")
        raw["input_hw"] = tuple(raw["input_hw"])
        return cls(**raw)


def pipeline_families(spec) -> tuple[str, ...]:
    """The families a pipeline names: the only user factories its run folder's arch.json files may name."""
    return tuple(part.family for part in (spec.teacher, spec.student) if hasattr(part, "family"))


def _is_int(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _arch_problems(raw: dict) -> list[tuple[str, str]]:
    """(field, what is wrong) for every bad value of an arch.json."""
    problems = []
    if not isinstance(raw["family"], str) or not raw["family"]:
        problems.append(("family", f"{raw['family']!r}; expected a family name"))
    for key in ("width", "depth"):
        value = raw[key]
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 4):
            problems.append((key, f"{value!r}; expected a number in (0, 4]"))
    if not _is_int(raw["in_channels"], 1, 64):
        problems.append(("in_channels", f"{raw['in_channels']!r}; expected an integer 1..64"))
    if not _is_int(raw["num_classes"], 1, 100_000):
        problems.append(("num_classes", f"{raw['num_classes']!r}; expected an integer 1..100000"))
    hw = raw["input_hw"]
    if not (isinstance(hw, list) and len(hw) == 2 and all(_is_int(v, 1, 4096) for v in hw)):
        problems.append(("input_hw", f"{hw!r}; expected [height, width], each 1..4096"))
    names = raw["class_names"]
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)
            and len(names) == raw["num_classes"]):
        problems.append(("class_names", f"expected {raw['num_classes']!r} strings, one per class"))
    return problems


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    # contiguous clones: safetensors refuses shared or strided storage.
    with atomic_output(path) as tmp:
        save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(tmp))


def read_state_dict(path: Path) -> dict:
    """A state dict from .safetensors, or from .pt/.pth with weights_only=True (no pickled code runs)."""
    return read_checkpoint(path)[0]


def read_checkpoint(path: Path) -> tuple[dict, str | None]:
    """(state dict, the checkpoint key it was under or None), checked: tensors only, all finite."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the user's file, reported in one line
        # PyTorch's own message advises turning weights_only off, which would run the pickle's code: never.
        why = " ".join(str(exc).split())
        if "weights_only" in why or "Unsupported global" in why or "WeightsUnpickler" in why:
            why = ("it holds Python objects besides tensors (a pickled model or optimizer); edgedistill never "
                   "unpickles code: save model.state_dict() with torch.save, or as .safetensors")
        raise UserError(f"{path}: not a loadable weights file: {why[:300]}") from None
    state, key = nested_state_dict(state)
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            keys = ", ".join(str(k)[:40] for k in list(state)[:8])
            raise UserError(f"{path}: entry {str(name)[:80]!r} is a {type(tensor).__name__}, not a tensor; found no "
                            f"weights under {', '.join(STATE_KEYS)} either (its keys: {keys}): save "
                            "model.state_dict(), or a dict holding it under one of those keys")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"{path}: the weights of {str(name)[:80]!r} hold NaN or inf; the checkpoint is broken "
                            "(was it saved after training diverged?)")
    return state, key


# Where training scripts put the weights in a checkpoint that also holds the epoch, the optimizer...
STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights", "params")


def nested_state_dict(checkpoint) -> tuple[object, str | None]:
    """(weights, key) of a checkpoint saved as {'model': state_dict, 'epoch': ..., 'optimizer': ...}: the first of
    STATE_KEYS that holds a dict of tensors; (the checkpoint, None) when its own values are the tensors."""
    import torch

    if not isinstance(checkpoint, dict) or any(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint, None
    for key in STATE_KEYS:
        inner = checkpoint.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner, key
    return checkpoint, None


def load_weights(model, path: Path, new_head: str | None = None) -> str | None:
    """Load weights strictly; a mismatch names the file and the first missing or unexpected keys. Returns the
    key of a training checkpoint the weights were found under (see STATE_KEYS), or None.

    `new_head`: the module path of a head that will be trained anew (teacher.finetune); its weights may have
    another shape (another class count) and are then left as initialised."""
    state, key = read_checkpoint(path)
    # A DDP checkpoint prefixes every key with 'module.'; the weights are the same.
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = model.state_dict()
    if state and not set(state) & set(expected):
        state = by_position(state, expected, path, new_head)
    if new_head is not None:
        state = {k: v for k, v in state.items() if not k.startswith(f"{new_head}.") or k not in expected
                 or tuple(v.shape) == tuple(expected[k].shape)}
        state.update({k: v for k, v in expected.items() if k.startswith(f"{new_head}.") and k not in state})
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
    return key


def by_position(state: dict, expected: dict, path: Path, new_head: str | None = None) -> dict:
    """The weights of the same architecture written by other code (other layer names, as a released checkpoint
    of EfficientNet-Lite0 has): matched to the model's layers in order, each pair checked by its role (weight,
    bias, running statistics) and shape (not the shape of `new_head`'s, which is trained anew); the first pair
    that does not fit is named."""
    if len(state) != len(expected):
        raise UserError(f"{path}: no weight name matches the model's and it holds {len(state)} tensors for the "
                        f"model's {len(expected)}; check teacher.family, width and depth")
    matched = {}
    for (theirs, tensor), (name, mine) in zip(state.items(), expected.items()):
        renewed = new_head is not None and name.startswith(f"{new_head}.")
        if theirs.rsplit(".", 1)[-1] != name.rsplit(".", 1)[-1] or (
                tuple(tensor.shape) != tuple(mine.shape) and not renewed):
            raise UserError(f"{path}: no weight name matches the model's, and in order {theirs} "
                            f"{tuple(tensor.shape)} does not fit {name} {tuple(mine.shape)}; check teacher.family, "
                            "width and depth")
        matched[name] = tensor
    return matched
