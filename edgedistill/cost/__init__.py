"""Model cost: multiply-accumulates by layer kind (the start of the latency predictor's inputs)."""

from __future__ import annotations


def macs_by_kind(model, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates of one inference (batch 1), split into convolution and linear layers."""
    import torch

    totals = {"conv": 0, "linear": 0}

    def count(module, _inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            per_output = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            totals["conv"] += output.numel() * per_output
        else:
            totals["linear"] += output.numel() * module.in_features

    handles = [m.register_forward_hook(count) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return totals


def is_linear_heavy(model, input_shape: tuple[int, ...]) -> bool:
    """True when linear layers do most of the arithmetic: dynamic int8 suits those, static int8 CNNs."""
    macs = macs_by_kind(model, input_shape)
    return macs["linear"] > macs["conv"]
