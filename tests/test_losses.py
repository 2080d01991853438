"""Soft-label KD: the hard and soft terms and the temperature scaling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgedistill.distill.losses import soft_label_kd


def test_alpha_zero_is_cross_entropy():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert torch.allclose(soft_label_kd(s, t, y, 4.0, 0.0), F.cross_entropy(s, y))


def test_soft_term_is_zero_when_student_matches_teacher_and_scaled_by_t_squared():
    torch.manual_seed(0)
    t, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert soft_label_kd(t.clone(), t, y, 3.0, 1.0).abs() < 1e-6
    s = torch.randn(8, 10)
    kl = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean")
    assert torch.allclose(soft_label_kd(s, t, y, 2.0, 1.0), kl * 4, atol=1e-6)


def test_gradient_flows_to_student_only():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    soft_label_kd(s, t.detach(), torch.tensor([0, 1, 2, 3]), 4.0, 0.5).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
