"""Teachers from other frameworks, as torch modules that return logits, and a new head for a teacher whose
classes are not the data's.

One table, `FOREIGN`: a pipeline's `teacher.kind` names how its file or folder becomes a module. Feature
and attention terms hook a teacher's layers by name, so they need a module tree (`models.FOREIGN_TEACHERS`
says which kinds have one); the others give logits only, which is all logit KD needs.

Loading is read-only and bounded to what each format is: Hugging Face folders without remote code,
TorchScript's own interpreter (never Python's pickle), torch.export's program format, and an ONNX graph run
by onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgedistill.errors import UserError
from edgedistill.models import programs
from edgedistill.quiet import quiet


class HuggingFaceLogits(nn.Module):
    """A transformers image classifier (its output is an ImageClassifierOutput) as a module returning logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


class OnnxLogits(nn.Module):
    """An ONNX classifier run by onnxruntime: logits, no gradients, no layers to hook. Its file's digest is a
    buffer, so the teacher-output cache tells two ONNX teachers apart."""

    def __init__(self, path: Path):
        super().__init__()
        import onnx
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        graph = onnx.load(str(path), load_external_data=False).graph
        self.weights_in_graph = sum(int(np.prod(t.dims)) for t in graph.initializer)
        digest = hashlib.sha256(path.read_bytes()).digest()
        self.register_buffer("source_digest", torch.tensor(list(digest), dtype=torch.uint8))

    def forward(self, x):
        out = self.session.run(None, {self.input_name: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


class ExportedProgram(nn.Module):
    """A torch.export program's module. It was captured in one mode (eval, for a teacher) and refuses
    train()/eval(), so they only set this wrapper's flag."""

    def __init__(self, program: nn.Module):
        super().__init__()
        self.program = program

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def forward(self, x):
        return self.program(x)


def _huggingface(path: Path) -> nn.Module:
    try:
        from transformers import AutoModelForImageClassification
    except ImportError:
        raise UserError("teacher.kind huggingface needs transformers: pip install 'edgedistill[lm]'") from None
    check_config_sizes(path / "config.json")
    try:
        model = AutoModelForImageClassification.from_pretrained(str(path), local_files_only=True,
                                                                trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers and torch (a weights file that is not plain tensors) raise many types
        raise UserError(f"{path}: teacher.path: not a Hugging Face image classifier folder transformers loads "
                        f"without running code ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    return HuggingFaceLogits(model.float())


MAX_CONFIG_WIDTH = 65_536  # a *_size, *_dim or *channels of config.json: wider than any released classifier
MAX_CONFIG_COUNT = 100_000  # a num_* (layers, heads, labels)


def check_config_sizes(config: Path) -> None:
    """Refuse a config.json whose sizes would allocate without bound before a weight is read."""
    try:
        raw = json.loads(config.read_text()) if config.stat().st_size < 1_000_000 else None
    except (OSError, ValueError):
        return  # transformers says what is wrong with it
    problems = []

    def walk(section, prefix=""):
        for key, value in (section.items() if isinstance(section, dict) else ()):
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, int) and not isinstance(value, bool):
                if key.startswith("num_"):
                    limit = MAX_CONFIG_COUNT
                elif key.endswith(("_size", "_dim", "channels")) and key != "vocab_size":
                    limit = MAX_CONFIG_WIDTH
                else:
                    continue
                if not 0 <= value <= limit:
                    problems.append(f"{config}: {prefix}{key}: {value:,}; expected 0..{limit:,}")

    walk(raw)
    if problems:
        raise UserError("\n".join(problems[:5]))


def _torchscript(path: Path) -> nn.Module:
    programs.check_torchscript_archive(path)  # loading runs the archive's __setstate__ methods
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"{path}: teacher.path: not a TorchScript file (torch.jit.save) "
                        f"({' '.join(str(exc).split())[:200]})") from None
    programs.check_torchscript_module(path, module)
    return module


def _exported(path: Path) -> nn.Module:
    programs.check_exported_archive(path)
    try:
        with programs.weights_only_loads(), quiet():  # torch logs a dozen lines before its error
            program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure to read is the user's file, in one line
        raise UserError(f"{path}: teacher.path: not a torch.export program (torch.export.save, .pt2) "
                        f"({' '.join(str(exc).split())[:200]})") from None
    programs.check_exported_program(path, program)
    return ExportedProgram(program.module())


def _onnx(path: Path) -> nn.Module:
    try:
        return OnnxLogits(path)
    except ImportError:
        raise UserError("teacher.kind onnx needs onnxruntime: pip install 'edgedistill[onnx]'") from None
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a bad graph
        raise UserError(f"{path}: teacher.path: not an ONNX model onnxruntime can run "
                        f"({' '.join(str(exc).split())[:200]})") from None


# kind -> the loader of its file or folder; models.FOREIGN_TEACHERS says which can be hooked.
FOREIGN: dict[str, Callable[[Path], nn.Module]] = {
    "huggingface": _huggingface,  # a folder saved by save_pretrained (config.json + weights)
    "torchscript": _torchscript,  # a file saved by torch.jit.save
    "exported": _exported,  # a .pt2 file saved by torch.export.save
    "onnx": _onnx,  # an .onnx file
}


def load_foreign(kind: str, path: Path) -> nn.Module:
    """The teacher at `path` as a module in eval mode with frozen weights."""
    model = FOREIGN[kind](path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def output_width(model: nn.Module, sample: torch.Tensor) -> int:
    """How many logits the teacher gives (one forward pass on `sample`); a bad answer is one line."""
    try:
        out = model.eval()(sample)
    except Exception as exc:  # noqa: BLE001 - a foreign model's own error, reported with the input it got
        raise UserError(f"teacher: fails on an input of shape {tuple(sample.shape)} "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); check data.preprocess") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"teacher: returns {got}; expected logits of shape (batch, classes)")
    return out.shape[1]


def last_linear(model: nn.Module, width: int) -> str | None:
    """The path of the model's last nn.Linear that gives `width` outputs: its classifier, when it has one."""
    found = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == width]
    return found[-1] if found else None


class WithHead(nn.Module):
    """A teacher whose classifier cannot be replaced (a compiled graph): a new linear head on its logits."""

    def __init__(self, teacher: nn.Module, width: int, num_classes: int):
        super().__init__()
        self.teacher, self.new_head = teacher, nn.Linear(width, num_classes)

    def forward(self, x):
        return self.new_head(self.teacher(x))


def attach_head(model: nn.Module, width: int, num_classes: int) -> tuple[nn.Module, str]:
    """(the teacher with a new `num_classes` head, the head's module path). Its last Linear of `width` outputs is
    replaced where the model has one; otherwise a linear layer is put on its logits."""
    name = last_linear(model, width)
    if name is None or isinstance(model, torch.jit.ScriptModule):
        wrapped = WithHead(model, width, num_classes)
        return wrapped, "new_head"
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))
    return model, name


class HeadOnlyTraining(nn.Module):
    """The teacher with only its new head trainable: the rest stays in eval mode (its batch-norm statistics are
    the pretrained ones) and frozen, whatever `train()` is asked."""

    def __init__(self, model: nn.Module, head: str):
        super().__init__()
        self.model, self.head = model, head
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.get_submodule(head).parameters():
            p.requires_grad_(True)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        self.model.get_submodule(self.head).train(mode)
        return self

    def forward(self, x):
        return self.model(x)


def teacher_from_run(arch, source: Path | None, weights: Path | None, head: Path | None) -> nn.Module:
    """The teacher the teacher stage settled on, for later stages: a family's saved weights, or the foreign model
    at `source` again with the new head the stage fitted (`head`, when it fitted one)."""
    from safetensors.torch import load_file

    from edgedistill.models.io import load_weights

    if arch.family not in FOREIGN:
        model = arch.build()
        load_weights(model, weights)
        return model
    model = load_foreign(arch.family, source)
    if head is not None:
        width = output_width(model, torch.zeros(1, arch.in_channels, *arch.input_hw))
        model, name = attach_head(model, width, arch.num_classes)
        model.get_submodule(name).load_state_dict(load_file(str(head)))
    return model.eval()


def parameter_count(model: nn.Module) -> int:
    """Parameters, counting an ONNX teacher's weights in its graph too."""
    return sum(p.numel() for p in model.parameters()) + sum(
        m.weights_in_graph for m in model.modules() if isinstance(m, OnnxLogits))


def has_layers(model: nn.Module) -> bool:
    """Whether hooks can read the model's layers: not a compiled graph (TorchScript, torch.export, ONNX)."""
    return not any(isinstance(m, (torch.jit.ScriptModule, ExportedProgram, OnnxLogits)) for m in model.modules())
