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


# DKD on three classes, label 0, T = 1: teacher probabilities [4, 3, 1] / 8, student uniform.
DKD_TEACHER = torch.tensor([[math.log(4.0), math.log(3.0), 0.0]])
DKD_STUDENT = torch.zeros(1, 3)
# Target part: teacher [p(label), p(other)] = [1/2, 1/2], student [1/3, 2/3].
TCKD = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
# Non-target part: teacher over classes 1 and 2 renormalized = [3/4, 1/4], student [1/2, 1/2].
NCKD = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)


def test_dkd_parts_by_hand():
    from edgedistill.distill.terms.dkd import dkd_parts

    tckd, nckd = dkd_parts(DKD_STUDENT, DKD_TEACHER, torch.tensor([0]), 1.0)
    assert tckd.item() == pytest.approx(TCKD, abs=1e-6) and nckd.item() == pytest.approx(NCKD, abs=1e-6)
    # At T = 2, doubled teacher logits soften to the same case; both parts are scaled by T^2.
    tckd, nckd = dkd_parts(DKD_STUDENT, 2 * DKD_TEACHER, torch.tensor([0]), 2.0)
    assert tckd.item() == pytest.approx(4 * TCKD, abs=1e-6) and nckd.item() == pytest.approx(4 * NCKD, abs=1e-6)


def test_dkd_equals_the_published_formulation_on_random_logits():
    """The reference code's way (masked sums of softmax probabilities, the label's logit pushed down by 1000
    for the non-target part), written out here, agrees with the log-space version on ordinary logits."""
    import torch.nn.functional as F

    from edgedistill.distill.terms.dkd import dkd_parts

    generator = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 10, generator=generator), 3 * torch.randn(16, 10, generator=generator)
    labels, temperature = torch.randint(0, 10, (16,), generator=generator), 4.0
    gt = F.one_hot(labels, 10).bool()
    p_s, p_t = F.softmax(s / temperature, 1), F.softmax(t / temperature, 1)
    b_s = torch.stack([p_s[gt], p_s.masked_fill(gt, 0).sum(1)], 1)
    b_t = torch.stack([p_t[gt], p_t.masked_fill(gt, 0).sum(1)], 1)
    tckd = F.kl_div(b_s.log(), b_t, reduction="sum") * temperature**2 / 16
    nckd = F.kl_div(F.log_softmax(s / temperature - 1000 * gt, 1), F.softmax(t / temperature - 1000 * gt, 1),
                    reduction="sum") * temperature**2 / 16
    ours = dkd_parts(s, t, labels, temperature)
    assert ours[0].item() == pytest.approx(tckd.item(), rel=1e-4) and ours[1].item() == pytest.approx(nckd.item(),
                                                                                                       rel=1e-4)


def test_the_objective_weighs_dkd_ramps_it_up_and_sends_no_gradient_to_the_teacher():
    student = DKD_STUDENT.clone().requires_grad_(True)
    teacher = DKD_TEACHER.clone().requires_grad_(True)
    objective, plan = _objective(alpha=0.0, temperature=1.0, dkd={"alpha": 1.0, "beta": 8.0, "warmup_epochs": 4})
    assert objective.names == ["ce", "dkd"]
    full = objective(student, torch.tensor([0]), {}, {}, teacher, {}, {}, plan, 1.0, epoch=3)
    assert full["dkd"].item() == pytest.approx(TCKD + 8 * NCKD, abs=1e-6)
    assert full["ce"].item() == pytest.approx(math.log(3.0), abs=1e-6)
    early = objective(student, torch.tensor([0]), {}, {}, teacher, {}, {}, plan, 1.0, epoch=0)
    assert early["dkd"].item() == pytest.approx((TCKD + 8 * NCKD) / 4, abs=1e-6)  # epoch 1 of a 4-epoch warm-up
    full["dkd"].backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None


def test_the_classifier_term_honours_the_divergence():
    """SimKD's term through the teacher's head uses distill.divergence like kd does."""
    from torch import nn

    from edgedistill.config.pipeline import Distill
    from edgedistill.distill.objective import DistillObjective
    from edgedistill.distill.schedule import Schedule

    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    teacher = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2))
    x, losses = torch.randn(8, 4), {}
    for kind in ("forward_kl", "reverse_kl"):
        cfg = Distill(alpha=0.0, divergence=kind, classifier={"student_layer": "1", "teacher_head": "1"})
        objective = DistillObjective(cfg, student, teacher, x[:2])
        s_in, t_in = {"1": student[0](x)}, {"1": teacher[0](x)}
        terms = objective(student(x), torch.zeros(8, dtype=torch.long), {}, s_in, teacher(x), {}, t_in,
                          Schedule(cfg).at(0), 2.0)
        through_head = teacher[1](objective.adapters["classifier"]["projector"](s_in["1"]))
        assert terms["classifier"].item() == pytest.approx(divergence(through_head, teacher(x), 2.0, kind).item(),
                                                           abs=1e-5)
        losses[kind] = terms["classifier"].item()
    assert losses["forward_kl"] != pytest.approx(losses["reverse_kl"])


def test_the_registry_drives_the_schema(tmp_path):
    """Every term is a distill section and a phase multiplier; an unknown one is refused, naming the known ones."""
    from edgedistill.config.pipeline import Distill, Phase, load_pipeline
    from edgedistill.distill.terms import TERMS
    from edgedistill.errors import UserError
    from tests.conftest import tiny_pipeline_dict, write_pipeline

    assert {"features", "attention", "classifier", "dkd"} <= set(TERMS)
    for name, term in TERMS.items():
        assert Distill.model_fields[name].annotation == term.Config | None and name in Phase.model_fields
        assert "weight" in term.Config.model_fields
    spec = tiny_pipeline_dict()
    spec["distill"]["crd"] = {"weight": 1.0}
    with pytest.raises(UserError, match=r"distill\.crd: unknown key 'crd' \(valid: .*attention.*classifier.*dkd.*"
                                        r"features"):
        load_pipeline(write_pipeline(tmp_path / "p.yaml", spec))
