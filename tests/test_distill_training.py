"""Distillation runs on real digits: schedule, teacher cache, NaN guard, adapters left out, assistants."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from rich.console import Console

from edgedistill.config.pipeline import DigitsData, Distill, load_pipeline
from edgedistill.data import load_dataset
from edgedistill.distill.cache import compute, load_or_compute
from edgedistill.distill.distiller import distill_model
from edgedistill.distill.schedule import Schedule
from edgedistill.distill.terms import TERMS
from edgedistill.distill.trainer import cosine_schedule, fit
from edgedistill.errors import StageFailed, UserError
from edgedistill.models import build_model
from tests.conftest import tiny_pipeline_dict, write_pipeline

QUIET = Console(file=open(os.devnull, "w"))


@pytest.fixture(scope="module")
def data():
    return load_dataset(DigitsData(kind="digits"), seed=0)


def net(family="resnet", width=0.25, depth=0.5):
    torch.manual_seed(0)
    return build_model(family, width=width, depth=depth, in_channels=1, num_classes=10, input_hw=(8, 8))


def test_standard_schedule_phases():
    schedule = Schedule(Distill(epochs=10, schedule="standard", temperature=6, temperature_end=2),
                        difficulty=torch.arange(20, dtype=torch.float32))
    assert [(p.name, p.first_epoch, p.last_epoch) for p in schedule.plans] == [
        ("warmup", 0, 2), ("distill", 2, 8), ("finetune", 8, 10)]
    warm, mid, fine = schedule.at(0), schedule.at(5), schedule.at(9)
    assert (warm.alpha, warm.easy_fraction) == (0.0, 0.5) and mid.alpha == 0.7 and fine.lr_scale == 0.1
    assert set(fine.terms) == set(TERMS) and not any(fine.terms.values())  # the fine-tune drops every term
    assert warm.terms == {"features": 1.0, "attention": 1.0, "classifier": 0.0, "dkd": 0.0,
                          "consistent": 0.0} and mid.terms["dkd"] == 1
    # Warm-up trains on the easiest half (lowest difficulty), shuffled; later phases on everything.
    order = schedule.order(0, 20, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(10))
    assert sorted(schedule.order(5, 20, torch.Generator().manual_seed(0)).tolist()) == list(range(20))
    assert schedule.temperature(0) == 6 and schedule.temperature(9) == 2


def test_lr_warms_up_linearly_then_decays_on_a_cosine():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = cosine_schedule(optimizer, epochs=6, lr_scale=None, warmup=2)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # Epochs 1 and 2 at a third and two thirds, then the full LR and cosine over the remaining four epochs.
    assert lrs == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                 0.5 * (1 + math.cos(3 * math.pi / 4))])


def test_warmup_must_leave_epochs_to_train(tmp_path):
    spec = tiny_pipeline_dict(distill={"epochs": 3, "warmup_epochs": 3})
    with pytest.raises(UserError, match=r"distill: .*warmup_epochs 3 leaves no epoch to train at full LR in epochs 3"):
        load_pipeline(write_pipeline(tmp_path / "p.yaml", spec))


def test_schedule_fractions_must_add_up(tmp_path):
    spec = tiny_pipeline_dict(distill={"schedule": [{"name": "warmup", "fraction": 0.5},
                                                    {"name": "distill", "fraction": 0.6}]})
    with pytest.raises(UserError, match="distill.schedule: phase fractions must add up to 1, got 1.1"):
        load_pipeline(write_pipeline(tmp_path / "p.yaml", spec))


def test_cache_miss_then_hit_gives_identical_outputs(data, tmp_path):
    teacher = net(width=0.5)
    first = load_or_compute(teacher, data.train.x, ["stages.1"], ["head"], root=tmp_path)
    second = load_or_compute(teacher, data.train.x, ["stages.1"], ["head"], root=tmp_path)
    assert (first.status, second.status) == ("miss", "hit") and first.key == second.key
    assert not isinstance(second.logits, np.memmap)  # small: read into memory, which a truncation cannot take away
    assert np.array_equal(first.logits, second.logits)
    assert np.array_equal(first.outputs["stages.1"], second.outputs["stages.1"])
    assert second.inputs["head"].shape == (len(data.train), 32, 2, 2)
    # Another teacher, or other data, is another entry.
    other = load_or_compute(net(width=0.5, depth=1.0), data.train.x, ["stages.1"], ["head"], root=tmp_path)
    assert other.status == "miss" and other.key != first.key
    assert load_or_compute(teacher, data.val.x, ["stages.1"], ["head"], root=tmp_path).status == "miss"


def learned(history: list[dict]) -> list[dict]:
    """A training history without its wall times: what two runs of the same training must share."""
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]


def _cfg(**kw):
    return Distill(**{"epochs": 2, "batch_size": 128, "lr": 0.01, **kw})


def test_distill_cache_modes(data):
    teacher = net(width=0.5)
    features = {"mapping": "projection", "pairs": [["stages.1", "stages.1"]]}
    runs = {name: distill_model(net("mobilenetv2", 0.125), teacher, data, _cfg(features=features, **kw),
                                seed=0, label=name, console=QUIET)
            for name, kw in [("first", {}), ("second", {}), ("off", {"cache": "off"}),
                             ("augmented", {"augment": {"shift": 1}})]}
    assert [r.cache for r in runs.values()] == ["miss", "hit", "online", "bypass"]
    # The cache changes where the teacher's outputs come from, not what is learned.
    assert learned(runs["first"].result.history) == learned(runs["second"].result.history)
    # Online, the teacher runs on batches of 128; the cache's pass on larger ones: kernels chosen per batch size
    # differ in the last bits, and an epoch of channels-last training carries that to ~1e-3 of the loss (9e-4
    # measured). Outputs of the wrong examples or of another teacher move these terms by far more.
    assert runs["off"].result.history[0]["terms"] == pytest.approx(runs["first"].result.history[0]["terms"], rel=1e-2)


def test_adapters_train_but_are_not_part_of_the_student(data):
    student = net("mobilenetv2", 0.125)
    keys = set(student.state_dict())
    run = distill_model(student, net(width=0.5), data,
                        _cfg(features={"mapping": "auto"}, classifier={"weight": 1.0}), seed=0, label="t",
                        console=QUIET)
    assert set(student.state_dict()) == keys
    assert run.mapping["adapter_params"] > 0 and run.mapping["classifier"]["teacher_shape"] == [32, 2, 2]
    assert {"kd", "ce", "features", "classifier"} <= set(run.result.history[0]["terms"])


def test_nan_guard_names_the_term_and_keeps_the_last_good_epoch(data, tmp_path):
    model = net()
    calls = {"n": 0}

    def loss_fn(x, logits, y, idx, epoch):
        calls["n"] += 1
        features = torch.tensor(float("nan")) if epoch == 1 and calls["n"] > 12 else logits.sum() * 0
        return {"ce": torch.nn.functional.cross_entropy(logits, y), "features": features}

    state = tmp_path / "state.pt"
    with pytest.raises(StageFailed, match=r"loss term 'features' became nan at epoch 2, step 3"):
        fit(model, data.train, data.val, loss_fn, _cfg(epochs=3), seed=0, label="t", console=QUIET, state_path=state)
    assert torch.load(state, weights_only=True)["epoch"] == 1


def test_progressive_assistant_through_the_engine(tmp_path):
    from edgedistill.config.device import load_device
    from edgedistill.pipeline.engine import run_pipeline
    from edgedistill.stages import default_stages

    spec = load_pipeline(write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(
        teacher={"width": 1.0}, distill={"progressive": {"mode": "on", "assistants": 2}})))
    manifest = run_pipeline(spec, load_device(spec.device), default_stages()[:3], tmp_path / "run", console=QUIET)
    progressive = manifest.stages["distill"].metrics["progressive"]
    assert progressive["used"] and len(progressive["assistants"]) == 2
    widths = [a["width"] for a in progressive["assistants"]]
    assert widths[0] > widths[1] > 0.125  # geometric steps from teacher width down to the student
    assert progressive["extra_seconds"] > 0


def test_teacher_pass_matches_direct_forward(data):
    teacher = net()
    out = compute(teacher, data.test.x, [], [])
    with torch.no_grad():
        assert np.allclose(out.logits, teacher.eval()(torch.from_numpy(data.test.x)).numpy(), atol=1e-5)


def test_onednn_is_off_only_for_the_models_it_trained_wrongly():
    """benchmarks/onednn_training.py: the width-0.25 ResNet (3x3 convolutions of 4 channels) aborted or changed
    weights run to run with oneDNN; wider ResNets and thin MobileNetV2s trained repeatably, and faster, with it."""
    from edgedistill.distill.trainer import onednn_safe

    assert not onednn_safe(net("resnet", width=0.25))
    assert onednn_safe(net("resnet", width=0.5)) and onednn_safe(net("mobilenetv2", width=0.125))
    assert not onednn_safe(net("mobilenetv2", width=0.125), net("resnet", width=0.25))  # adapters, assistants



def test_a_bank_of_seeded_views_caches_the_teacher_on_augmented_images(data, tmp_path, monkeypatch):
    """distill.teacher_views: the teacher's logits on K seeded views of each image, computed once; the student
    sees exactly those views (so each cached row is the teacher on the pixels the student trains on)."""
    from edgedistill.config.pipeline import Augment
    from edgedistill.distill import augment as augmentation
    from edgedistill.distill.cache import lookup

    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path))
    bank = augmentation.ViewBank(augmentation.build(Augment(shift=2, flip=True)), 3, seed=0, count=len(data.train))
    x = torch.from_numpy(data.train.x[:6])
    idx, view = torch.arange(6), torch.tensor([0, 1, 2, 0, 1, 2])
    once = bank.render(x, idx, view)
    # View k of image i has the same pixels whichever batch it is made in; another view has others.
    assert torch.equal(bank.render(x[[4, 1]], idx[[4, 1]], view[[4, 1]]), once[[4, 1]])
    assert not all(torch.equal(a, b) for a, b in zip(bank.render(x, idx, (view + 1) % 3), once))

    teacher = net(width=0.5)
    cfg = _cfg(augment={"shift": 2, "flip": True}, teacher_views=3)
    first = distill_model(net("mobilenetv2", 0.125), teacher, data, cfg, seed=0, label="v", console=QUIET)
    second = distill_model(net("mobilenetv2", 0.125), teacher, data, cfg, seed=0, label="v", console=QUIET)
    assert first.cache == "miss; augmented views: miss (3 per image)"
    assert second.cache == "hit; augmented views: hit (3 per image)"
    assert learned(first.result.history) == learned(second.result.history)  # the cache changes nothing learned
    (entry,) = [p.name for p in (tmp_path / "teacher").iterdir() if p.name.startswith("views-")]
    logits = lookup(entry).logits
    n = len(data.train)
    assert logits.shape == (3 * n, 10)
    with torch.no_grad():
        direct = teacher.eval()(bank.render(x, idx, view))
    rows = (view * n + idx).numpy()
    assert np.allclose(logits[rows], direct.numpy(), atol=1e-4)
    # What a training step loads: one view per image and the bank's rows of exactly those views.
    shown, picked = bank.views_of(x, idx, torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert np.allclose(logits[picked.numpy()], teacher(shown).numpy(), atol=1e-4)
    # A term that reads the teacher's layers cannot use a bank of logits: the teacher runs online.
    features = {"mapping": "projection", "pairs": [["stages.1", "stages.1"]]}
    hooked = distill_model(net("mobilenetv2", 0.125), teacher, data, _cfg(features=features, augment={"shift": 1},
                                                                          teacher_views=3),
                           seed=0, label="f", console=QUIET)
    assert hooked.cache == "bypass"


def test_teacher_views_without_augmentation_is_one_line(tmp_path):
    spec = tiny_pipeline_dict(distill={"teacher_views": 4})
    with pytest.raises(UserError, match=r"distill: .*teacher_views 4: views of what\? set distill.augment"):
        load_pipeline(write_pipeline(tmp_path / "p.yaml", spec))
