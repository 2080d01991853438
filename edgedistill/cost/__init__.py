"""Model cost on an input shape: parameters, bytes at each precision, MACs per layer, activation memory.

This is what the latency predictor and student selection build on. Counts come from one
forward pass with hooks on the layers that do arithmetic (Conv2d, Linear) and on pooling layers, and
with a function mode that sees tensor additions (residual connections): pooling and additions do no
multiply-accumulates, but each stays a separate op in the exported graph that moves its inputs. Batch
norm and activations are not counted: the runtimes fold them into the convolution before them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgedistill.precisions import get_precision


@dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str  # conv | depthwise | linear | pool | add
    macs: int
    params: int
    input_bytes: int  # fp32 activations read
    output_bytes: int  # fp32 activations written
    min_channels: int = 0  # convolutions: the fewer of input and output channels
    positions: int = 0  # convolutions: output pixels per channel


@dataclass(frozen=True)
class ModelCost:
    params: int
    layers: list[LayerCost] = field(default_factory=list)
    peak_activation_bytes: int = 0  # largest input + output of one layer, fp32, batch 1

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def flops(self) -> int:
        return 2 * self.macs  # a multiply-accumulate is two floating-point operations

    def weight_bytes(self, precision: str) -> int:
        return int(self.params * get_precision(precision).bytes_per_weight)

    def activation_bytes(self, precision: str) -> int:
        """Activations read and written by all layers, at `precision` (the counts are fp32 bytes)."""
        per_value = get_precision(precision).bytes_per_weight  # the arithmetic's value size
        return int(sum(layer.input_bytes + layer.output_bytes for layer in self.layers) * per_value) // 4

    def macs_by_kind(self) -> dict[str, int]:
        out = {"conv": 0, "linear": 0}
        for layer in self.layers:
            if layer.kind not in ("pool", "add"):
                out["linear" if layer.kind == "linear" else "conv"] += layer.macs
        return out


def model_cost(model, input_shape: tuple[int, ...]) -> ModelCost:
    """Per-layer MACs and activation bytes of one inference of `model` on one sample of `input_shape`."""
    import copy

    import torch

    POOLS = (torch.nn.AdaptiveAvgPool2d, torch.nn.AvgPool2d, torch.nn.MaxPool2d, torch.nn.AdaptiveMaxPool2d)
    layers: list[LayerCost] = []

    def hook(name):
        def count(module, inputs, output):
            min_channels = positions = 0
            if isinstance(module, POOLS):
                per_output, kind = 0, "pool"
            elif isinstance(module, torch.nn.Conv2d):
                per_output = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
                kind = "depthwise" if module.groups > 1 and module.groups == module.in_channels else "conv"
                min_channels = min(module.in_channels, module.out_channels)
                positions = output.shape[-2] * output.shape[-1]
            else:
                per_output, kind = module.in_features, "linear"
            layers.append(LayerCost(name, kind, output.numel() * per_output,
                                    sum(p.numel() for p in module.parameters(recurse=False)),
                                    inputs[0].numel() * 4, output.numel() * 4, min_channels, positions))

        return count

    def count(device: str) -> None:
        shadow = copy.deepcopy(model).to(device).eval()
        handles = [m.register_forward_hook(hook(n)) for n, m in shadow.named_modules()
                   if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear) + POOLS)]
        try:
            with torch.no_grad(), _count_adds_mode()(layers):
                shadow(torch.zeros(1, *input_shape, device=device))
        finally:
            for handle in handles:
                handle.remove()

    # Counted on a copy on the meta device: only shapes are computed, so a 4096x4096 input or a wide
    # candidate allocates no activations, and the caller's model is left as it was. A model whose forward
    # looks at values (`if x.sum() > 0`) cannot run there: it is counted on a CPU copy instead.
    try:
        count("meta")
    except (RuntimeError, NotImplementedError):
        layers.clear()
        count("cpu")
    peak = max((layer.input_bytes + layer.output_bytes for layer in layers), default=0)
    return ModelCost(sum(p.numel() for p in model.parameters()), layers, peak)


def _count_adds_mode():
    from torch.overrides import TorchFunctionMode

    class CountAdds(TorchFunctionMode):
        """Records every addition of two same-shaped tensors as an 'add' layer."""

        ADDS = {"__add__", "__radd__", "__iadd__", "add", "add_"}

        def __init__(self, layers: list):
            super().__init__()
            self.layers = layers

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = getattr(func, "__name__", "")
            if name in self.ADDS and len(args) == 2 and all(hasattr(a, "numel") for a in args) \
                    and args[0].shape == args[1].shape:
                n = out.numel()
                self.layers.append(LayerCost(f"add.{len(self.layers)}", "add", 0, 0, 2 * n * 4, n * 4))
            return out

    return CountAdds


def macs_by_kind(model, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates of one inference (batch 1), split into convolution and linear layers."""
    return model_cost(model, input_shape).macs_by_kind()


def is_linear_heavy(model, input_shape: tuple[int, ...]) -> bool:
    """True when linear layers do most of the arithmetic: dynamic int8 suits those, static int8 CNNs."""
    macs = macs_by_kind(model, input_shape)
    return macs["linear"] > macs["conv"]
