"""Shared helpers for the model families: channel rounding, depth scaling, the conv-BN-act block."""

from __future__ import annotations

import math

from torch import nn


def scale_channels(channels: int, width: float, divisor: int = 4) -> int:
    """Channels times the width multiplier, rounded to a multiple of `divisor` (never below it).

    A multiple of 4 keeps int8 kernels on ARM (4-lane dot products) efficient without the
    multiple-of-8 rounding of MobileNet, which would make the tiniest students all the same size.
    """
    return max(divisor, int(round(channels * width / divisor)) * divisor)


def scale_depth(blocks: int, depth: float) -> int:
    return max(1, math.ceil(blocks * depth))


def stem_stride(input_hw: tuple[int, int]) -> int:
    """Small inputs (digits are 8x8) keep their resolution in the stem; larger ones halve it."""
    return 1 if min(input_hw) < 32 else 2


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class Classifier(nn.Module):
    """Global average pool, flatten, linear: the head every family shares (and feature hooks can find)."""

    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))
