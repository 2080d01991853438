"""MAC counts by layer kind, and the default precision they imply."""

from __future__ import annotations

from torch import nn

from edgedistill.config.device import load_device
from edgedistill.config.pipeline import load_pipeline
from edgedistill.cost import is_linear_heavy, macs_by_kind
from edgedistill.models import build_model
from edgedistill.stages.export import requested_precisions
from tests.conftest import tiny_pipeline_dict, write_pipeline


def test_macs_by_hand():
    # conv 1->4, 3x3, 8x8 output: 4*64 outputs x 9 MACs; linear 256->10: 10 x 256.
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 10))
    assert macs_by_kind(model, (1, 8, 8)) == {"conv": 4 * 64 * 9, "linear": 2560}
    depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    assert macs_by_kind(depthwise, (4, 8, 8))["conv"] == 4 * 64 * 9


def test_auto_precision_follows_device_and_model_kind(tmp_path):
    cnn = build_model("mobilenetv2", width=0.25, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    assert not is_linear_heavy(cnn, (1, 8, 8)) and is_linear_heavy(mlp, (1, 8, 8))
    spec = load_pipeline(write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(
        export={"precisions": ["fp32", "auto"]})))
    pi = load_device("raspberry-pi-4")  # default int8
    assert requested_precisions(spec, pi, linear_heavy=False) == ["fp32", "int8"]
    assert requested_precisions(spec, pi, linear_heavy=True) == ["fp32", "int8-dynamic"]
    assert requested_precisions(spec, load_device("host"), linear_heavy=False) == ["fp32"]  # default fp32
