"""Consistent teaching (function matching): teacher and student get the same augmented (and mixed) views, the
teacher online; the pipeline refuses combinations whose labels would describe mixed images wrongly."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console

from edgedistill.config.pipeline import load_pipeline
from edgedistill.data import load_dataset
from edgedistill.distill import augment
from edgedistill.distill.distiller import distill_model
from edgedistill.errors import UserError
from edgedistill.models import build_model
from tests.conftest import tiny_pipeline_dict, write_pipeline


def _spec(tmp_path, **distill):
    raw = tiny_pipeline_dict(distill={"epochs": 2, "batch_size": 64, **distill})
    return load_pipeline(write_pipeline(tmp_path / "p.yaml", raw))


def test_teacher_and_student_see_the_same_augmented_batch(tmp_path):
    spec = _spec(tmp_path, alpha=1.0, consistent={"crop_area": 0.5, "shift": 1, "mixup": 0.4})
    data = load_dataset(spec.data, spec.seed)
    teacher = build_model("resnet", width=0.25, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8))
    student = build_model("mobilenetv2", width=0.125, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8))
    seen = {"teacher": [], "student": []}
    for name, model in (("teacher", teacher), ("student", student)):
        model.register_forward_pre_hook(lambda m, args, name=name: seen[name].append(args[0].detach().clone())
                                        if torch.is_grad_enabled() or name == "teacher" else None)
    result = distill_model(student, teacher, data, spec.distill, seed=0, label="t", console=Console(quiet=True))
    assert result.cache == "bypass" and "consistent" in result.terms
    training = [x for x in seen["student"] if x.shape[0] <= 64]  # training batches (validation runs in 512s)
    teacher_views = [x for x in seen["teacher"] if x.shape[0] <= 64]
    # The teacher's first pass over the data ranks difficulty (un-augmented); then it runs on every training batch.
    paired = teacher_views[-len(training):]
    assert len(training) == 2 * 19 and all(torch.equal(s, t) for s, t in zip(training, paired))
    raw = {tuple(r.flatten().tolist()) for r in torch.from_numpy(data.train.x)}
    augmented = sum(tuple(v.flatten().tolist()) not in raw for batch in training for v in batch)
    assert augmented > 0.9 * sum(len(b) for b in training)


def test_mixup_blends_pairs_of_the_batch_with_one_weight():
    x = torch.stack([torch.full((1, 2, 2), float(i)) for i in range(6)])
    mixed = augment.mixup(0.4)(x, torch.Generator().manual_seed(3))
    again = augment.mixup(0.4)(x, torch.Generator().manual_seed(3))
    assert torch.equal(mixed, again) and not torch.equal(mixed, x)
    # Every mixed image is lam * x_i + (1 - lam) * x_j: the batch mean is kept.
    assert torch.allclose(mixed.mean(), x.mean())


@pytest.mark.parametrize("distill,message", [
    ({"consistent": {"mixup": 0.2}}, "set distill.alpha: 1"),
    ({"alpha": 1.0, "consistent": {"mixup": 0.2}, "dkd": {}}, "leave out dkd"),
    ({"alpha": 1.0, "consistent": {}, "augment": {"shift": 1}}, "both set the training views"),
])
def test_views_that_labels_cannot_describe_are_refused(tmp_path, distill, message):
    with pytest.raises(UserError, match=message):
        _spec(tmp_path, **distill)


def test_consistent_without_mixup_keeps_the_labels(tmp_path):
    spec = _spec(tmp_path, alpha=0.5, consistent={"crop_area": 0.6, "weight": 2.0, "temperature": 2.0})
    assert spec.distill.consistent.weight == 2.0 and spec.distill.consistent.mixup == 0


def test_the_consistent_views_mix_for_distillation_and_not_for_the_scratch_baseline(tmp_path):
    from edgedistill.distill.distiller import distill_augmentation

    spec = _spec(tmp_path, alpha=1.0, consistent={"crop_area": 1.0, "mixup": 0.4})
    x = torch.rand(8, 1, 8, 8)
    views = distill_augmentation(spec.distill)(x, torch.Generator().manual_seed(0))
    assert not torch.equal(views, x) and torch.allclose(views.mean(), x.mean())  # mixup alone: the mean is kept
    assert distill_augmentation(spec.distill, with_mixup=False) is None  # nothing else was asked for
