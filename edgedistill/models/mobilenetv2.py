"""A MobileNetV2-style family (inverted residuals, linear bottlenecks) with width and depth multipliers."""

from __future__ import annotations

from torch import nn

from edgedistill.models.common import Classifier, ConvBNAct, scale_channels, scale_depth, stem_stride

# (expansion, output channels, blocks, stride): MobileNetV2's table cut to four stages for small inputs.
BASE_CONFIG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 1))
STEM_CHANNELS = 32
HEAD_CHANNELS = 256


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = [] if expansion == 1 else [ConvBNAct(cin, hidden, 1, act=nn.ReLU6)]
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   ConvBNAct(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """Stem, stages `stages.0`..`stages.3`, a 1x1 head conv, classifier."""

    def __init__(self, *, width: float = 1.0, depth: float = 1.0, in_channels: int = 3, num_classes: int = 10,
                 input_hw: tuple[int, int] = (32, 32)):
        super().__init__()
        cin = scale_channels(STEM_CHANNELS, width)
        self.stem = ConvBNAct(in_channels, cin, 3, stem_stride(input_hw), act=nn.ReLU6)
        stages = []
        for expansion, channels, blocks, stride in BASE_CONFIG:
            cout = scale_channels(channels, width)
            layers = []
            for b in range(scale_depth(blocks, depth)):
                layers.append(InvertedResidual(cin, cout, stride if b == 0 else 1, expansion))
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        head = scale_channels(HEAD_CHANNELS, width)
        self.head_conv = ConvBNAct(cin, head, 1, act=nn.ReLU6)
        self.head = Classifier(head, num_classes)

    def forward(self, x):
        return self.head(self.head_conv(self.stages(self.stem(x))))
