"""Model cost on an input shape: parameters, bytes at each precision, MACs per layer, activation memory.

This is what the latency predictor and student selection build on. Counts come from one
forward pass with hooks on the layers that do arithmetic (Conv2d, Linear) and on pooling layers, and
with a function mode that sees tensor additions (residual connections), multiplications of two tensors
(squeeze-and-excitation's gate) and the activations runtimes do not fold into the convolution before them
(hard-swish, sigmoid, SiLU, GELU, tanh: LiteRT's int8 HARD_SWISH even runs outside XNNPACK,
benchmarks/README.md "Where int8 time goes"). These do no multiply-accumulates, but each stays a separate
op in the exported graph that moves its inputs. Batch norm and ReLU/ReLU6 are not counted: the runtimes
fold them into the convolution before them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgedistill.precisions import get_precision


@dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str  # conv | depthwise | linear | pool | add | mul | activation
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
            if layer.kind in ("conv", "depthwise", "linear"):
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
            with torch.no_grad(), _count_elementwise_mode()(layers):
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


def _count_elementwise_mode():
    from torch.overrides import TorchFunctionMode

    class CountElementwise(TorchFunctionMode):
        """Records every addition of two same-shaped tensors as an 'add' layer, every product of two tensors
        as a 'mul' layer, and every activation that runtimes leave as an op of its own as an 'activation'."""

        ADDS = {"__add__", "__radd__", "__iadd__", "add", "add_"}
        MULS = {"__mul__", "__rmul__", "__imul__", "mul", "mul_"}
        ACTIVATIONS = {"hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_", "sigmoid", "sigmoid_", "silu",
                       "silu_", "gelu", "tanh", "tanh_", "mish"}

        def __init__(self, layers: list):
            super().__init__()
            self.layers = layers

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = getattr(func, "__name__", "")
            tensors = len(args) == 2 and all(hasattr(a, "numel") for a in args)
            if name in self.ADDS and tensors and args[0].shape == args[1].shape:
                n = out.numel()
                self.layers.append(LayerCost(f"add.{len(self.layers)}", "add", 0, 0, 2 * n * 4, n * 4))
            elif name in self.MULS and tensors:
                read = (args[0].numel() + args[1].numel()) * 4
                self.layers.append(LayerCost(f"mul.{len(self.layers)}", "mul", 0, 0, read, out.numel() * 4))
            elif name in self.ACTIVATIONS and args and hasattr(args[0], "numel"):
                n = args[0].numel() * 4
                self.layers.append(LayerCost(f"{name.rstrip('_')}.{len(self.layers)}", "activation", 0, 0, n, n))
            return out

    return CountElementwise


def macs_by_kind(model, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates of one inference (batch 1), split into convolution and linear layers."""
    return model_cost(model, input_shape).macs_by_kind()


def is_linear_heavy(model, input_shape: tuple[int, ...]) -> bool:
    """True when linear layers do most of the arithmetic: dynamic int8 suits those, static int8 CNNs."""
    macs = macs_by_kind(model, input_shape)
    return macs["linear"] > macs["conv"]
