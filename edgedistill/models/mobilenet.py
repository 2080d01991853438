"""The published edge architectures at real resolution (224x224 ImageNet designs, overall stride 32):
MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381, Table 2), MobileNetV3-Large and -Small (Howard et al.
2019, arXiv:1905.02244, Tables 1 and 2) and EfficientNet-Lite0 (EfficientNet-B0's blocks without squeeze-and-
excitation, ReLU6, fixed stem and head: the TensorFlow release's efficientnet_lite_builder.py).

Each takes the `build_model` arguments; `width` scales every block's channels (rounded to multiples of 8,
as the papers do) and `depth` the number of blocks in each stage. The blocks of one resolution sit in
`stages.<i>`, so feature mapping finds them. tests/test_models.py checks the counts against the papers.
"""

from __future__ import annotations

import math

from torch import nn

from edgedistill.models.common import scale_depth


def divisible(value: float, divisor: int = 8) -> int:
    """Channels rounded to the nearest multiple of `divisor`, never more than 10 % below `value` (the rounding
    of the MobileNet papers' reference code)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBN(nn.Sequential):
    """Convolution, batch norm, optional activation. `same_pad` pads as TensorFlow's "SAME" (more at the bottom
    and right for stride 2 on even sizes): weights trained in TensorFlow need it to give the same outputs."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU6, same_pad: int | None = None, eps: float = 1e-5):
        layers: list[nn.Module] = []
        padding = kernel // 2
        if same_pad is not None:  # the input's side length, known when the model is built
            total = max((math.ceil(same_pad / stride) - 1) * stride + kernel - same_pad, 0)
            if total % 2 or total // 2 != kernel // 2:
                layers.append(nn.ZeroPad2d((total // 2, total - total // 2) * 2))
                padding = 0
        layers += [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
                   nn.BatchNorm2d(cout, eps=eps)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        squeezed = divisible(channels // 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.relu, self.gate = nn.ReLU(inplace=True), nn.Hardsigmoid(inplace=True)

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expansion (skipped when it would not widen), depthwise kxk, optional SE, linear
    1x1 projection; a residual when the shape is kept."""

    def __init__(self, cin: int, hidden: int, cout: int, kernel: int, stride: int, act: type[nn.Module],
                 se: bool = False, same_pad: int | None = None, eps: float = 1e-5):
        super().__init__()
        layers: list[nn.Module] = [] if hidden == cin else [ConvBN(cin, hidden, 1, act=act, eps=eps)]
        layers.append(ConvBN(hidden, hidden, kernel, stride, groups=hidden, act=act, same_pad=same_pad, eps=eps))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(ConvBN(hidden, cout, 1, act=None, eps=eps))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return x + out if self.residual else out


# (expansion, kernel, output channels, blocks, stride, squeeze-excite, activation) per stage.
MOBILENET_V2 = ((1, 3, 16, 1, 1, False, "relu6"), (6, 3, 24, 2, 2, False, "relu6"),
                (6, 3, 32, 3, 2, False, "relu6"), (6, 3, 64, 4, 2, False, "relu6"),
                (6, 3, 96, 3, 1, False, "relu6"), (6, 3, 160, 3, 2, False, "relu6"),
                (6, 3, 320, 1, 1, False, "relu6"))
EFFICIENTNET_LITE0 = ((1, 3, 16, 1, 1, False, "relu6"), (6, 3, 24, 2, 2, False, "relu6"),
                      (6, 5, 40, 2, 2, False, "relu6"), (6, 3, 80, 3, 2, False, "relu6"),
                      (6, 5, 112, 3, 1, False, "relu6"), (6, 5, 192, 4, 2, False, "relu6"),
                      (6, 3, 320, 1, 1, False, "relu6"))
# MobileNetV3 gives each block its own expansion width: (input, kernel, expanded, output, SE, activation, stride).
MOBILENET_V3_LARGE = ((16, 3, 16, 16, False, "relu", 1), (16, 3, 64, 24, False, "relu", 2),
                      (24, 3, 72, 24, False, "relu", 1), (24, 5, 72, 40, True, "relu", 2),
                      (40, 5, 120, 40, True, "relu", 1), (40, 5, 120, 40, True, "relu", 1),
                      (40, 3, 240, 80, False, "hswish", 2), (80, 3, 200, 80, False, "hswish", 1),
                      (80, 3, 184, 80, False, "hswish", 1), (80, 3, 184, 80, False, "hswish", 1),
                      (80, 3, 480, 112, True, "hswish", 1), (112, 3, 672, 112, True, "hswish", 1),
                      (112, 5, 672, 160, True, "hswish", 2), (160, 5, 960, 160, True, "hswish", 1),
                      (160, 5, 960, 160, True, "hswish", 1))
MOBILENET_V3_SMALL = ((16, 3, 16, 16, True, "relu", 2), (16, 3, 72, 24, False, "relu", 2),
                      (24, 3, 88, 24, False, "relu", 1), (24, 5, 96, 40, True, "hswish", 2),
                      (40, 5, 240, 40, True, "hswish", 1), (40, 5, 240, 40, True, "hswish", 1),
                      (40, 5, 120, 48, True, "hswish", 1), (48, 5, 144, 48, True, "hswish", 1),
                      (48, 5, 288, 96, True, "hswish", 2), (96, 5, 576, 96, True, "hswish", 1),
                      (96, 5, 576, 96, True, "hswish", 1))
ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish}


def v3_stages(table, depth: float) -> list[list[tuple]]:
    """MobileNetV3's blocks grouped by resolution (a stage ends where the next block strides), each stage cut
    to `depth` of its blocks (the first, which changes the shape, always kept)."""
    stages: list[list[tuple]] = []
    for row in table:
        if row[-1] == 2 or not stages:
            stages.append([])
        stages[-1].append(row)
    return [stage[:scale_depth(len(stage), depth)] for stage in stages]


class MobileNet(nn.Module):
    """Stem, `stages.<i>` of bottlenecks, a 1x1 head conv, pooling and the classifier (`head`). A stage's rows are
    (expansion, kernel, output channels, squeeze-excite, activation, stride), one per block."""

    def __init__(self, stages: list[list[tuple]], *, expansion_is_ratio: bool, stem: int, head_conv: int,
                 head_hidden: int | None, act: str, in_channels: int, num_classes: int, input_hw: tuple[int, int],
                 width: float, dropout: float, same_pad: bool = False, eps: float = 1e-5):
        super().__init__()
        side = min(input_hw) if same_pad else None
        self.stem = ConvBN(in_channels, stem, 3, 2, act=ACTIVATIONS[act], same_pad=side, eps=eps)
        side = None if side is None else math.ceil(side / 2)
        cin, built = stem, []
        for stage in stages:
            blocks = []
            for expansion, kernel, cout, se, block_act, stride in stage:
                # V2 and Lite widen each block's input by a ratio; V3 names each block's expanded width.
                hidden = round(cin * expansion) if expansion_is_ratio else divisible(expansion * width)
                cout = divisible(cout * width)
                blocks.append(Bottleneck(cin, hidden, cout, kernel, stride, ACTIVATIONS[block_act], se, side, eps))
                side = None if side is None else math.ceil(side / stride)
                cin = cout
            built.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*built)
        self.head_conv = ConvBN(cin, head_conv, 1, act=ACTIVATIONS[act], eps=eps)
        self.pool = nn.AdaptiveAvgPool2d(1)
        layers: list[nn.Module] = []
        features = head_conv
        if head_hidden is not None:  # MobileNetV3's last stage: a 1x1 (here linear) layer after pooling
            layers += [nn.Linear(head_conv, head_hidden), nn.Hardswish(inplace=True)]
            features = head_hidden
        layers += [nn.Dropout(dropout), nn.Linear(features, num_classes)]
        self.head = nn.Sequential(*layers)

    def forward(self, x):
        return self.head(self.pool(self.head_conv(self.stages(self.stem(x)))).flatten(1))


def ratio_stages(table, depth: float) -> list[list[tuple]]:
    """MobileNetV2-style stage rows as blocks (expansion ratio, kernel, out, SE, activation, stride), each stage cut
    to `depth` of its blocks; only the first block of a stage strides."""
    return [[(expansion, kernel, channels, se, act, stride if b == 0 else 1) for b in range(scale_depth(blocks, depth))]
            for expansion, kernel, channels, blocks, stride, se, act in table]


def mobilenet_v2(*, width=1.0, depth=1.0, in_channels=3, num_classes=1000, input_hw=(224, 224)) -> MobileNet:
    """MobileNetV2: 3.50 M parameters and 300 M multiply-adds at width 1.0, 224x224, 1,000 classes."""
    return MobileNet(ratio_stages(MOBILENET_V2, depth), expansion_is_ratio=True, stem=divisible(32 * width),
                     head_conv=divisible(1280 * max(1.0, width)), head_hidden=None, act="relu6",
                     in_channels=in_channels, num_classes=num_classes, input_hw=input_hw, width=width, dropout=0.2)


def _mobilenet_v3(table, last: int, hidden: int, width, depth, in_channels, num_classes, input_hw) -> MobileNet:
    stages = [[(expanded, kernel, cout, se, act, stride) for _, kernel, expanded, cout, se, act, stride in stage]
              for stage in v3_stages(table, depth)]
    return MobileNet(stages, expansion_is_ratio=False, stem=divisible(16 * width),
                     head_conv=divisible(last * width), head_hidden=hidden,
                     act="hswish", in_channels=in_channels, num_classes=num_classes, input_hw=input_hw, width=width,
                     dropout=0.2)


def mobilenet_v3_large(*, width=1.0, depth=1.0, in_channels=3, num_classes=1000, input_hw=(224, 224)) -> MobileNet:
    """MobileNetV3-Large: 5.48 M parameters and 217 M multiply-adds at width 1.0, 224x224, 1,000 classes."""
    return _mobilenet_v3(MOBILENET_V3_LARGE, 960, 1280, width, depth, in_channels, num_classes, input_hw)


def mobilenet_v3_small(*, width=1.0, depth=1.0, in_channels=3, num_classes=1000, input_hw=(224, 224)) -> MobileNet:
    """MobileNetV3-Small: 2.54 M parameters and 57 M multiply-adds at width 1.0, 224x224, 1,000 classes."""
    return _mobilenet_v3(MOBILENET_V3_SMALL, 576, 1024, width, depth, in_channels, num_classes, input_hw)


def efficientnet_lite0(*, width=1.0, depth=1.0, in_channels=3, num_classes=1000,
                       input_hw=(224, 224)) -> MobileNet:
    """EfficientNet-Lite0: 4.65 M parameters at 224x224, 1,000 classes. Stem (32) and head (1,280) stay fixed
    under `width`, as in the Lite models; TensorFlow padding and batch-norm epsilon (1e-3), so the released
    weights (models.pretrained) give their outputs."""
    return MobileNet(ratio_stages(EFFICIENTNET_LITE0, depth), expansion_is_ratio=True, stem=32, head_conv=1280,
                     head_hidden=None, act="relu6", in_channels=in_channels,
                     num_classes=num_classes, input_hw=input_hw, width=width, dropout=0.2, same_pad=True, eps=1e-3)
