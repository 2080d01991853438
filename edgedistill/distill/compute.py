"""Where training runs and in what precision: `train: {device, precision}` of a pipeline, resolved once.

Every training loop (teacher training, distillation, the scratch baseline, sentence-encoder and causal-LM
distillation) takes a `Compute`: models and adapters go to its device, each batch is moved there as it is
taken (datasets and the teacher-output cache stay in host memory), and the forward pass runs under autocast
when the precision is bf16 or fp16 (fp16 with a gradient scaler). What is saved (weights, training states,
the best weights) is moved to the CPU first, so a run started on a GPU resumes on a CPU and back.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from edgedistill.errors import UserError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Compute:
    device: torch.device
    precision: str = "fp32"

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """The forward pass's context: autocast to bf16/fp16, or nothing for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])

    def scaler(self) -> torch.amp.GradScaler:
        """fp16 gradients underflow without loss scaling; bf16 and fp32 need none (the scaler is then a no-op)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def batch(self, tensor: torch.Tensor) -> torch.Tensor:
        """A batch on the training device (pinned host memory lets the copy overlap on CUDA)."""
        if not self.is_cuda:
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def describe(self) -> dict:
        """What the report's environment says about the training device."""
        info = {"device": str(self.device), "precision": self.precision}
        if self.is_cuda:
            props = torch.cuda.get_device_properties(self.device)
            info.update(gpu=props.name, memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                        driver=_nvidia_driver())
        else:
            from edgedistill.config.device import host_cpu, host_kernels

            info.update(cpu=host_cpu(), kernels=host_kernels(), threads=torch.get_num_threads())
        return info


CPU = Compute(torch.device("cpu"))


def resolve(device: str = "auto", precision: str = "fp32") -> Compute:
    """`device`: auto (CUDA when there is one, else the CPU), cpu, cuda or cuda:N. Under torchrun, `cuda` and
    auto mean this rank's GPU (LOCAL_RANK). One line when CUDA is asked for and there is none."""
    if precision not in PRECISIONS:
        raise UserError(f"train.precision: {precision!r} (valid: {', '.join(PRECISIONS)})")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return Compute(torch.device("cpu"), precision)
    if not torch.cuda.is_available():
        raise UserError(f"train.device: {device!r}, but torch sees no CUDA device here (torch {torch.__version__}, "
                        f"CUDA build: {torch.version.cuda or 'none'}); use auto or cpu")
    if device in ("auto", "cuda"):
        index = int(os.environ.get("LOCAL_RANK", "0"))
    else:
        index = int(device.removeprefix("cuda:"))
    if index >= torch.cuda.device_count():
        raise UserError(f"train.device: cuda:{index}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    torch.cuda.set_device(index)
    return Compute(torch.device("cuda", index), precision)


def device_of(model: torch.nn.Module) -> torch.device:
    """Where a model's weights are (the CPU for a model without any)."""
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def to_cpu(state):
    """A state dict (nested dicts and lists of tensors, as optimizers keep) with every tensor on the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(to_cpu(v) for v in state)
    return state


def _nvidia_driver() -> str | None:
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        return out.splitlines()[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None
