"""Layer mapping modes on teacher/student pairs of different widths and depths, and the hooks behind them."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from edgedistill.distill.hooks import FeatureHooks, resolve, unwrap
from edgedistill.distill.mapping import align_spatial, depth_indices, make_adapter, plan_pairs, stage_layers
from edgedistill.errors import StageFailed, UserError
from edgedistill.models import build_model

SAMPLE = torch.randn(2, 1, 8, 8)


def model(family="resnet", width=1.0, depth=1.0):
    return build_model(family, width=width, depth=depth, in_channels=1, num_classes=10, input_hw=(8, 8))


def test_direct_needs_equal_shapes():
    pairs = plan_pairs("direct", model(width=0.5, depth=0.5), model(width=0.5), SAMPLE)
    assert [(p.student, p.teacher) for p in pairs] == [("stages.0", "stages.0"), ("stages.1", "stages.1"),
                                                       ("stages.2", "stages.2")]
    assert all(p.student_shape == p.teacher_shape for p in pairs)
    with pytest.raises(UserError, match=r"direct mapping needs equal shapes: student stages.0 \(8, 8, 8\) vs "
                                        r"teacher stages.0 \(16, 8, 8\); use mapping: projection"):
        plan_pairs("direct", model(width=0.5), model(width=1.0), SAMPLE)


def test_projection_adapters_bridge_width():
    student, teacher = model(width=0.25), model(width=1.0)
    pairs = plan_pairs("projection", student, teacher, SAMPLE, pairs=[("stages.2", "stages.2"), ("stem", "stem")])
    assert [(p.student_shape, p.teacher_shape) for p in pairs] == [((16, 2, 2), (64, 2, 2)), ((4, 8, 8), (16, 8, 8))]
    assert pairs[0].width_ratio == 4
    adapter = make_adapter(pairs[0].student_shape, pairs[0].teacher_shape)
    assert isinstance(adapter, nn.Conv2d) and adapter(torch.zeros(3, 16, 2, 2)).shape == (3, 64, 2, 2)
    assert isinstance(make_adapter((8,), (32,)), nn.Linear)
    assert isinstance(make_adapter((8, 2, 2), (8, 2, 2)), nn.Identity)


def test_projection_one_to_one_needs_equal_counts():
    with pytest.raises(UserError, match="student has 4 and the teacher 3; use mapping: depth or auto"):
        plan_pairs("projection", model("mobilenetv2", 0.25), model(), SAMPLE)


@pytest.mark.parametrize("strategy,expected", [("uniform", [1, 3]), ("last", [2, 3]), ([0, 2], [0, 2])])
def test_depth_indices(strategy, expected):
    assert depth_indices(2, 4, strategy) == expected


def test_depth_indices_more_student_layers_than_teacher():
    assert depth_indices(4, 2, "uniform") == [0, 0, 1, 1]
    with pytest.raises(UserError, match=r"need 2 teacher indices in 0..3"):
        depth_indices(2, 4, [0, 7])


def test_depth_mapping_between_models_of_different_depth():
    student = model(width=0.25, depth=0.5)  # one block per stage
    teacher = model(width=1.0, depth=2.0)  # four blocks per stage
    t_layers = [f"stages.{s}.{b}" for s in range(3) for b in range(4)]
    pairs = plan_pairs("depth", student, teacher, SAMPLE, teacher_layers=t_layers, depth="uniform")
    assert [p.teacher for p in pairs] == ["stages.0.3", "stages.1.3", "stages.2.3"]
    pairs = plan_pairs("depth", student, teacher, SAMPLE, teacher_layers=t_layers, depth="last")
    assert [p.teacher for p in pairs] == ["stages.2.1", "stages.2.2", "stages.2.3"]


def test_auto_pairs_by_spatial_size_and_relative_depth():
    # MobileNetV2-style: 4 stages at 8, 4, 2, 2 pixels; ResNet: 3 stages at 8, 4, 2.
    pairs = plan_pairs("auto", model("mobilenetv2", 0.125, 0.5), model(), SAMPLE)
    assert [(p.student, p.teacher) for p in pairs] == [("stages.0", "stages.0"), ("stages.1", "stages.1"),
                                                       ("stages.2", "stages.2"), ("stages.3", "stages.2")]
    assert all(p.student_shape[1:] == p.teacher_shape[1:] for p in pairs)


def test_align_spatial_pools_to_the_smaller_map():
    s, t = align_spatial(torch.ones(1, 3, 8, 8), torch.ones(1, 5, 4, 4))
    assert s.shape == (1, 3, 4, 4) and t.shape == (1, 5, 4, 4)
    s, t = align_spatial(torch.ones(1, 3, 2, 2), torch.ones(1, 5, 4, 4))
    assert s.shape == (1, 3, 2, 2) and t.shape == (1, 5, 2, 2)


def test_stage_layers_and_unknown_path():
    assert stage_layers(model("mobilenetv2")) == ["stages.0", "stages.1", "stages.2", "stages.3"]
    with pytest.raises(UserError, match=r"unknown layer of ResNet 'stage.1'; did you mean 'stages.1'"):
        resolve(model(), "stage.1")


def test_hook_that_does_not_fire_fails_loudly():
    net = model(width=0.25)
    net.unused = nn.Conv2d(1, 1, 1)  # registered, never called in forward
    with FeatureHooks(net, ["stages.1", "unused"]) as hooks:
        net(SAMPLE)
        with pytest.raises(StageFailed, match="feature hook on 'unused' did not fire at step 3"):
            hooks.collect("step 3")


def test_only_training_hooks_ignore_evaluation_passes():
    net = model(width=0.25)
    with FeatureHooks(net, ["stages.1"], only_training=True) as hooks:
        net.eval()
        net(SAMPLE)
        with pytest.raises(StageFailed):
            hooks.collect()
        net.train()
        net(SAMPLE)
        assert hooks.collect()["stages.1"].shape == (2, 8, 4, 4)


@pytest.fixture
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_hooks_work_under_a_real_ddp_wrapper(process_group):
    """A feature hook that does not fire under DDP would leave the feature loss silently at 0. Here it must not."""
    torch.manual_seed(0)
    student, teacher = model(width=0.25), model(width=1.0)
    wrapped = nn.parallel.DistributedDataParallel(student)
    assert unwrap(wrapped) is student
    assert resolve(wrapped, "module.stages.1") is resolve(wrapped, "stages.1") is student.stages[1]
    (pair,) = plan_pairs("projection", wrapped, teacher, SAMPLE, pairs=[("module.stages.1", "stages.1")])
    adapter = make_adapter(pair.student_shape, pair.teacher_shape)
    with FeatureHooks(wrapped, [pair.student]) as s_hooks, FeatureHooks(teacher, [pair.teacher]) as t_hooks:
        wrapped(SAMPLE)
        with torch.no_grad():
            teacher(SAMPLE)
        s = s_hooks.collect()[pair.student]
        t = t_hooks.collect()[pair.teacher]
        loss = nn.functional.mse_loss(adapter(s), t)
        loss.backward()
    assert loss.item() > 0
    assert student.stages[1][0].conv1[0].weight.grad.abs().sum() > 0


class TorchvisionStyleResNet(torch.nn.Module):
    """The module tree of torchvision's ResNet (conv1, bn1, relu, maxpool, layer1..3, avgpool, fc), no `stages`."""

    def __init__(self, width=8):
        super().__init__()
        nn = torch.nn

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())

        self.conv1, self.bn1, self.relu = nn.Conv2d(1, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU()
        self.maxpool = nn.MaxPool2d(2)
        self.layer1, self.layer2 = block(width, width, 1), block(width, 2 * width, 2)
        self.layer3 = block(2 * width, 4 * width, 2)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4 * width, 10)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def test_auto_finds_the_stages_of_a_model_we_did_not_write():
    """The last module at each resolution, in forward order: whole blocks, not bn1/relu/maxpool/avgpool."""
    sample = torch.zeros(2, 1, 32, 32)
    teacher, student = TorchvisionStyleResNet(16), TorchvisionStyleResNet(4)
    assert stage_layers(teacher, sample) == ["relu", "layer1", "layer2", "layer3"]  # 16, 8, 4, 2 pixels a side
    assert stage_layers(teacher) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "avgpool"]
    pairs = plan_pairs("auto", student, teacher, sample)
    assert [(p.student, p.teacher) for p in pairs] == [("relu", "relu"), ("layer1", "layer1"), ("layer2", "layer2"),
                                                       ("layer3", "layer3")]
    assert pairs[-1].student_shape == (16, 2, 2) and pairs[-1].teacher_shape == (64, 2, 2)
