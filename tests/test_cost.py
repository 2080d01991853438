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


def test_model_cost_by_hand():
    from edgedistill.cost import model_cost

    # conv 1->4 3x3 on 8x8 (+bias): 2,304 MACs, 40 params; depthwise 4 ch 3x3: 2,304 MACs, 36 params;
    # linear 256->10 (+bias): 2,560 MACs, 2,570 params.
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False),
                          nn.Flatten(), nn.Linear(256, 10))
    cost = model_cost(model, (1, 8, 8))
    assert [(layer.kind, layer.macs, layer.params) for layer in cost.layers] == [
        ("conv", 2304, 40), ("depthwise", 2304, 36), ("linear", 2560, 2570)]
    assert cost.params == 2646 and cost.macs == 7168 and cost.flops == 14336
    assert cost.weight_bytes("fp32") == 4 * 2646 and cost.weight_bytes("int8") == 2646
    # Peak activations: the depthwise layer reads and writes 4x8x8 floats.
    assert cost.peak_activation_bytes == 2 * 256 * 4


def test_family_cost_grows_with_width():
    from edgedistill.cost import model_cost

    small = model_cost(build_model("resnet", width=0.25, depth=1, in_channels=1, num_classes=10, input_hw=(8, 8)),
                       (1, 8, 8))
    large = model_cost(build_model("resnet", width=1.0, depth=1, in_channels=1, num_classes=10, input_hw=(8, 8)),
                       (1, 8, 8))
    assert large.macs > 8 * small.macs and large.params > 8 * small.params
