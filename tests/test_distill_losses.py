"""Each loss term against values computed by hand on fixed tensors."""

from __future__ import annotations

import math

import pytest
import torch

from edgedistill.distill.losses import attention_loss, attention_map, divergence, feature_loss

# Teacher probabilities [0.75, 0.25] and student [0.5, 0.5] at T = 1.
TEACHER = torch.tensor([[math.log(3.0), 0.0]])
STUDENT = torch.tensor([[0.0, 0.0]])


def test_forward_kl_by_hand():
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(teacher || student)
    assert divergence(STUDENT, TEACHER, 1.0, "forward_kl").item() == pytest.approx(expected, abs=1e-6)


def test_reverse_kl_by_hand():
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # KL(student || teacher)
    assert divergence(STUDENT, TEACHER, 1.0, "reverse_kl").item() == pytest.approx(expected, abs=1e-6)


def test_jsd_by_hand():
    m = [0.625, 0.375]
    kl_t = 0.75 * math.log(0.75 / m[0]) + 0.25 * math.log(0.25 / m[1])
    kl_s = 0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
    assert divergence(STUDENT, TEACHER, 1.0, "jsd", beta=0.5).item() == pytest.approx(0.5 * kl_t + 0.5 * kl_s, abs=1e-6)


def test_temperature_softens_and_scales_by_t_squared():
    # At T = 2 the teacher logits [ln 9, 0] soften to [ln 3, 0]/1, i.e. the T = 1 case above, times 4.
    teacher = torch.tensor([[math.log(9.0), 0.0]])
    expected = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert divergence(STUDENT, teacher, 2.0).item() == pytest.approx(expected, abs=1e-6)


def _objective(**cfg):
    """The production objective (DistillObjective, as distill_model builds it) with logit terms only."""
    from torch import nn

    from edgedistill.config.pipeline import Distill
    from edgedistill.distill.objective import DistillObjective
    from edgedistill.distill.schedule import Schedule

    config = Distill(**cfg)
    objective = DistillObjective(config, nn.Linear(2, 2), nn.Linear(2, 2), torch.zeros(1, 2))
    return objective, Schedule(config).at(0)


def test_the_objective_weighs_kd_and_cross_entropy_by_alpha():
    labels = torch.tensor([1])
    ce = math.log(2.0)  # student is uniform over two classes
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    objective, plan = _objective(alpha=0.3, temperature=1.0)
    terms = objective(STUDENT, labels, {}, {}, TEACHER, {}, {}, plan, 1.0)
    assert terms["kd"].item() == pytest.approx(0.3 * kl, abs=1e-6)
    assert terms["ce"].item() == pytest.approx(0.7 * ce, abs=1e-6)
    objective, plan = _objective(alpha=0.0)
    assert set(objective(STUDENT, labels, {}, {}, TEACHER, {}, {}, plan, 1.0)) == {"ce"}
    # At T = 2 the teacher logits [ln 9, 0] soften to the T = 1 case above, and the term is scaled by T^2.
    objective, plan = _objective(alpha=1.0)
    terms = objective(STUDENT, labels, {}, {}, torch.tensor([[math.log(9.0), 0.0]]), {}, {}, plan, 2.0)
    assert set(terms) == {"kd"} and terms["kd"].item() == pytest.approx(4 * kl, abs=1e-6)


def test_the_objective_sends_no_gradient_to_the_teacher():
    student = torch.randn(4, 2, requires_grad=True)
    teacher = torch.randn(4, 2, requires_grad=True)  # not detached by the caller: the objective must not need it
    objective, plan = _objective(alpha=0.5, divergence="jsd")
    sum(objective(student, torch.tensor([0, 1, 0, 1]), {}, {}, teacher, {}, {}, plan, 4.0).values()).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None


@pytest.mark.parametrize("kind,expected", [
    ("mse", (0 + 4 + 0 + 16) / 4),
    ("smooth_l1", (0 + 1.5 + 0 + 3.5) / 4),
    ("cosine", ((1 - 1 / math.sqrt(5)) + (1 - 3 / 5)) / 2),
])
def test_feature_losses_by_hand(kind, expected):
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    teacher = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    assert feature_loss(student, teacher, kind).item() == pytest.approx(expected, abs=1e-6)


def test_attention_map_and_loss_by_hand():
    # Two channels over a 1x2 map: mean of squares over channels = [1, 2], normalized = [1, 2] / sqrt(5).
    student = torch.tensor([[[[1.0, 0.0]], [[1.0, 2.0]]]])
    teacher = torch.tensor([[[[1.0, 0.0]]]])  # one channel: map [1, 0], already unit length
    assert torch.allclose(attention_map(student), torch.tensor([[1 / math.sqrt(5), 2 / math.sqrt(5)]]))
    expected = ((1 / math.sqrt(5) - 1) ** 2 + (2 / math.sqrt(5)) ** 2) / 2
    assert attention_loss(student, teacher).item() == pytest.approx(expected, abs=1e-6)


def test_teacher_side_gets_no_gradient():
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, requires_grad=True)
    (feature_loss(s, t) + attention_loss(s, t)).backward()
    assert s.grad is not None and t.grad is None
