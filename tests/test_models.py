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
    assert family_names() == ["efficientnet_lite0", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
                              "mobilenetv2", "resnet"]
    with pytest.raises(UserError, match=r"unknown model family 'resnt'; did you mean 'resnet'\?"):
        get_family("resnt")


USER_MODULE = '''
import pathlib, torch
pathlib.Path(__file__).with_name("imported.marker").write_text("imported")

def tiny_net(width, depth, in_channels, num_classes, input_hw):
    """A user's own classifier: the project calls it with the family arguments."""
    hidden = max(4, int(16 * width))
    return torch.nn.Sequential(torch.nn.Conv2d(in_channels, hidden, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(hidden, num_classes))
'''


@pytest.mark.slow
def test_user_factory_is_imported_only_where_the_pipeline_names_it(tmp_path):
    from tests.conftest import cli, tiny_pipeline_dict, write_pipeline

    (tmp_path / "usermodels.py").write_text(USER_MODULE)
    env = {"PYTHONPATH": str(tmp_path)}
    spec = tiny_pipeline_dict(teacher={"family": "usermodels:tiny_net", "width": 1.0})
    path = write_pipeline(tmp_path / "p.yaml", spec)
    assert cli("validate", path, cwd=tmp_path, env=env).returncode == 0
    assert not (tmp_path / "imported.marker").exists()  # validating never imports the user's code
    proc = cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "imported.marker").exists()
    bad = write_pipeline(tmp_path / "bad.yaml", tiny_pipeline_dict(teacher={"family": "nosuchpkg.models:net"}))
    proc = cli("run", bad, "--out", tmp_path / "bad-run", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: family 'nosuchpkg.models:net': cannot import module 'nosuchpkg.models'" in proc.stderr
    # A family that is neither registered nor package.module:function is refused when the file is read.
    odd = write_pipeline(tmp_path / "odd.yaml", tiny_pipeline_dict(teacher={"family": "os.system('x')"}))
    proc = cli("validate", odd, cwd=tmp_path)
    assert proc.returncode == 2 and "teacher.family" in proc.stderr


# Parameter counts of the published models at 224x224 and 1,000 classes: torchvision's model pages list
# mobilenet_v2 3,504,872, mobilenet_v3_large 5,483,032, mobilenet_v3_small 2,542,856 (the same architectures);
# the released EfficientNet-Lite0 weights hold 4,652,008 parameters. Multiply-adds as the papers give them:
# Sandler et al. 2018 Table 4: 300 M; Howard et al. 2019 Table 3: 219 M (Large) and 56 M (Small).
PUBLISHED = {"mobilenet_v2": (3_504_872, 300e6), "mobilenet_v3_large": (5_483_032, 219e6),
             "mobilenet_v3_small": (2_542_856, 56e6), "efficientnet_lite0": (4_652_008, None)}


@pytest.mark.parametrize("family", sorted(PUBLISHED))
def test_real_resolution_families_match_the_published_counts(family):
    from edgedistill.cost import model_cost

    params, macs = PUBLISHED[family]
    model = build_model(family, width=1.0, depth=1.0, in_channels=3, num_classes=1000, input_hw=(224, 224))
    assert count_params(model) == params
    if macs is not None:  # the papers round; our count is convolutions and linear layers
        assert model_cost(model, (3, 224, 224)).macs == pytest.approx(macs, rel=0.015)
    assert model.eval()(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    names = dict(model.named_modules())
    assert {"stem", "stages.0", "stages.3", "head_conv", "head"} <= set(names)


@pytest.mark.parametrize("family", sorted(PUBLISHED))
def test_real_resolution_families_scale_and_take_small_inputs(family):
    small = build_model(family, width=0.35, depth=0.5, in_channels=1, num_classes=10, input_hw=(64, 64))
    full = build_model(family, width=1.0, depth=1.0, in_channels=1, num_classes=10, input_hw=(64, 64))
    assert count_params(small) < count_params(full) / 2
    assert small.eval()(torch.zeros(2, 1, 64, 64)).shape == (2, 10)


def test_efficientnet_lite0_pads_like_tensorflow():
    """Stride-2 convolutions on even sizes pad one more pixel at the bottom and right, as TensorFlow's SAME."""
    model = build_model("efficientnet_lite0", width=1.0, depth=1.0, in_channels=3, num_classes=1000,
                        input_hw=(224, 224))
    pad = model.stem[0]
    assert isinstance(pad, torch.nn.ZeroPad2d) and pad.padding == (0, 1, 0, 1)
    assert model.stem[1].padding == (0, 0) and model.stem[2].eps == 1e-3
