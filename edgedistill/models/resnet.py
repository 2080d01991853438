"""A small ResNet-style family (basic blocks, three stages) with width and depth multipliers."""

from __future__ import annotations

from torch import nn

from edgedistill.models.common import Classifier, ConvBNAct, scale_channels, scale_depth, stem_stride

BASE_WIDTHS = (16, 32, 64)
BASE_BLOCKS = (2, 2, 2)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 3, stride)
        self.conv2 = ConvBNAct(cout, cout, 3, 1, act=None)
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else ConvBNAct(cin, cout, 1, stride, act=None))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem, three stages of basic blocks (strides 1, 2, 2), classifier.

    Stages are `stages.0`..`stages.2`: stable module paths for feature distillation.
    """

    def __init__(self, *, width: float = 1.0, depth: float = 1.0, in_channels: int = 3, num_classes: int = 10,
                 input_hw: tuple[int, int] = (32, 32)):
        super().__init__()
        widths = [scale_channels(c, width) for c in BASE_WIDTHS]
        self.stem = ConvBNAct(in_channels, widths[0], 3, stem_stride(input_hw))
        stages, cin = [], widths[0]
        for i, (cout, blocks) in enumerate(zip(widths, BASE_BLOCKS)):
            layers = []
            for b in range(scale_depth(blocks, depth)):
                layers.append(BasicBlock(cin, cout, (1 if i == 0 else 2) if b == 0 else 1))
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = Classifier(cin, num_classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))
