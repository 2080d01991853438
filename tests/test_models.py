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
