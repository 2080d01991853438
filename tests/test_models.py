"""The model families: shapes, width and depth multipliers, registry errors."""

from __future__ import annotations

import pytest
import torch

from edgedistill.errors import UserError
from edgedistill.models import build_model, count_params, family_names, get_family


@pytest.mark.parametrize("family", ["resnet", "mobilenetv2"])
@pytest.mark.parametrize("hw,channels", [((8, 8), 1), ((32, 32), 3), ((64, 48), 3)])
def test_forward_shape(family, hw, channels):
    model = build_model(family, width=0.25, depth=0.5, in_channels=channels, num_classes=7, input_hw=hw)
    assert model(torch.zeros(2, channels, *hw)).shape == (2, 7)


@pytest.mark.parametrize("family", ["resnet", "mobilenetv2"])
def test_width_and_depth_shrink_the_model(family):
    def params(width, depth):
        return count_params(build_model(family, width=width, depth=depth, in_channels=1, num_classes=10,
                                        input_hw=(8, 8)))

    assert params(1.0, 1.0) > params(0.5, 1.0) > params(0.25, 1.0) > params(0.125, 1.0)
    assert params(0.5, 1.0) > params(0.5, 0.5)
    assert params(1.0, 2.0) > params(1.0, 1.0)


def test_stages_have_stable_paths():
    model = build_model("resnet", width=1, depth=1, in_channels=1, num_classes=10, input_hw=(8, 8))
    names = dict(model.named_modules())
    assert {"stem", "stages.0", "stages.1", "stages.2", "head.fc"} <= set(names)


def test_unknown_family_lists_choices():
    assert family_names() == ["mobilenetv2", "resnet"]
    with pytest.raises(UserError, match=r"unknown model family 'resnt'; did you mean 'resnet'\?"):
        get_family("resnt")
