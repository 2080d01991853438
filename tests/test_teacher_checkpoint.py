"""A teacher loaded from a checkpoint: safetensors or weights-only torch, never pickled code."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from rich.console import Console

from edgedistill.config.device import load_device
from edgedistill.config.pipeline import load_pipeline
from edgedistill.errors import UserError
from edgedistill.models import build_model
from edgedistill.models.io import load_weights, read_state_dict, save_weights
from edgedistill.pipeline.engine import run_pipeline
from edgedistill.stages import default_stages
from tests.conftest import tiny_pipeline_dict, write_pipeline

ARCH = {"family": "resnet", "width": 0.25, "depth": 0.5}


def _model():
    return build_model(in_channels=1, num_classes=10, input_hw=(8, 8), **ARCH)


def _run_teacher_only(tmp_path, path):
    raw = tiny_pipeline_dict()
    raw["teacher"] = {"kind": "checkpoint", "path": str(path), **ARCH}
    spec = load_pipeline(write_pipeline(tmp_path / "p.yaml", raw))
    run_dir = tmp_path / "run"
    run_pipeline(spec, load_device(spec.device), default_stages()[:1], run_dir,
                 console=Console(file=open("/dev/null", "w")))
    return json.loads((run_dir / "manifest.json").read_text())["stages"]["teacher"]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_teacher_loads(tmp_path, suffix):
    model = _model()
    path = tmp_path / f"teacher{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)  # DDP-style
    else:
        save_weights(model, path)
    record = _run_teacher_only(tmp_path, path)
    assert record["status"] == "completed" and record["metrics"]["source"] == "checkpoint"
    loaded = _model()
    load_weights(loaded, tmp_path / "run" / "teacher" / "model.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch notes the pickle protocol
def test_pickle_with_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Exploit()}, f)
    with pytest.raises(UserError, match="not a loadable weights file"):
        read_state_dict(path)
    assert not (tmp_path / "PWNED").exists()


def test_mismatched_weights_name_the_keys(tmp_path):
    other = build_model("resnet", width=0.5, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8))
    path = tmp_path / "wide.safetensors"
    save_weights(other, path)
    with pytest.raises(UserError, match=r"wide\.safetensors: weights do not match the architecture \(shape of "):
        load_weights(_model(), path)


@pytest.mark.parametrize("key", ["model", "model_state_dict", "state_dict"])
def test_a_training_checkpoint_with_the_weights_under_a_common_key_loads(tmp_path, key):
    model = build_model("resnet", width=0.25, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8))
    optimizer = torch.optim.Adam(model.parameters())
    torch.save({key: model.state_dict(), "epoch": 7, "optimizer": optimizer.state_dict()}, tmp_path / "ckpt.pt")
    loaded = build_model("resnet", width=0.25, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8))
    load_weights(loaded, tmp_path / "ckpt.pt")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_checkpoint_without_weights_says_what_it_holds(tmp_path):
    torch.save({"epoch": 7, "notes": "x"}, tmp_path / "ckpt.pt")
    with pytest.raises(UserError, match=r"found no weights under state_dict, .* \(its keys: epoch, notes\)"):
        read_state_dict(tmp_path / "ckpt.pt")


@pytest.mark.parametrize("scope", ["head", "whole"])
def test_a_pretrained_teacher_is_fine_tuned_whole_or_by_its_head(tmp_path, scope):
    """A checkpoint with 5 classes on the digits' 10: a new head, and with scope whole every layer trains too
    (and is what the stage saves, with the floor a learned-nothing model would score beside it)."""
    pretrained = build_model(in_channels=1, num_classes=5, input_hw=(8, 8), **ARCH)
    save_weights(pretrained, tmp_path / "five.safetensors")
    raw = tiny_pipeline_dict()
    raw["teacher"] = {"kind": "checkpoint", "path": str(tmp_path / "five.safetensors"), **ARCH,
                      "finetune": {"epochs": 1, "scope": scope, "augment": {"shift": 1}}}
    spec = load_pipeline(write_pipeline(tmp_path / "p.yaml", raw))
    run_pipeline(spec, load_device(spec.device), default_stages()[:1], tmp_path / "run",
                 console=Console(file=open("/dev/null", "w")))
    record = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["teacher"]
    assert record["status"] == "completed" and record["metrics"]["finetune"]["scope"] == scope
    assert record["metrics"]["floor"]["chance"] == pytest.approx(0.1)
    tuned = _model()
    load_weights(tuned, tmp_path / "run" / "teacher" / "model.safetensors")
    before, after = pretrained.state_dict(), tuned.state_dict()
    body = [k for k in before if before[k].shape == after[k].shape and before[k].is_floating_point()]
    changed = [k for k in body if not torch.equal(before[k], after[k])]
    if scope == "whole":
        assert len(changed) > len(body) // 2
    else:
        assert changed == []


def test_a_foreign_teacher_cannot_be_fine_tuned_whole(tmp_path):
    raw = tiny_pipeline_dict()
    (tmp_path / "t.pt").write_bytes(b"x")
    raw["teacher"] = {"kind": "torchscript", "path": str(tmp_path / "t.pt"), "finetune": {"scope": "whole"}}
    with pytest.raises(UserError, match="teacher.finetune: .*scope whole: a teacher from another framework"):
        load_pipeline(write_pipeline(tmp_path / "p.yaml", raw))


def test_a_student_can_start_from_the_teachers_layers(tmp_path):
    """student.init: teacher copies every tensor the student shares with the teacher by name and shape; a student
    that shares none stops with one line."""
    from safetensors.torch import load_file

    raw = tiny_pipeline_dict(student={"family": "resnet", "width": 0.25, "depth": 0.25, "init": "teacher"})
    spec = load_pipeline(write_pipeline(tmp_path / "p.yaml", raw))
    run_pipeline(spec, load_device(spec.device), default_stages()[:2], tmp_path / "run",
                 console=Console(file=open("/dev/null", "w")))
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    inherited = stages["student"]["metrics"]["inherited"]
    assert inherited["tensors"] == inherited["of"] and inherited["share_of_values"] == 1.0  # the first blocks, all
    teacher = load_file(str(tmp_path / "run" / "teacher" / "model.safetensors"))
    student = load_file(str(tmp_path / "run" / "student" / "init.safetensors"))
    same = [k for k in student if k in teacher and teacher[k].shape == student[k].shape]
    assert len(same) == inherited["tensors"] and all(torch.equal(student[k], teacher[k]) for k in same)
    raw = tiny_pipeline_dict(student={"family": "mobilenetv2", "width": 0.125, "depth": 0.5, "init": "teacher"})
    spec = load_pipeline(write_pipeline(tmp_path / "q.yaml", raw))
    run_pipeline(spec, load_device(spec.device), default_stages()[:2], tmp_path / "other",
                 console=Console(file=open("/dev/null", "w")))
    record = json.loads((tmp_path / "other" / "manifest.json").read_text())["stages"]["student"]
    assert record["status"] == "failed" and "of its values (tensors of the same name and shape)" in record["error"]


def test_a_student_can_start_from_the_teachers_checkpoint_before_fine_tuning(tmp_path):
    """student.init: pretrained copies the checkpoint's tensors as the file holds them (not the fine-tuned teacher's),
    leaving out a head of another class count; a teacher that is no checkpoint is refused when the file is read."""
    from safetensors.torch import load_file

    pretrained = build_model(in_channels=1, num_classes=5, input_hw=(8, 8), **ARCH)
    save_weights(pretrained, tmp_path / "five.safetensors")
    raw = tiny_pipeline_dict(student={**ARCH, "depth": 0.25, "init": "pretrained"})
    raw["teacher"] = {"kind": "checkpoint", "path": str(tmp_path / "five.safetensors"), **ARCH,
                      "finetune": {"epochs": 1, "scope": "whole"}}
    spec = load_pipeline(write_pipeline(tmp_path / "p.yaml", raw))
    run_pipeline(spec, load_device(spec.device), default_stages()[:2], tmp_path / "run",
                 console=Console(file=open("/dev/null", "w")))
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    inherited = stages["student"]["metrics"]["inherited"]
    student = load_file(str(tmp_path / "run" / "student" / "init.safetensors"))
    tuned = load_file(str(tmp_path / "run" / "teacher" / "model.safetensors"))
    before = pretrained.state_dict()
    same = [k for k in student if k in before and before[k].shape == student[k].shape]
    assert inherited["tensors"] == len(same) < inherited["of"]  # the 5-class head is not the student's 10
    assert all(torch.equal(student[k], before[k]) for k in same)
    assert any(not torch.equal(student[k], tuned[k]) for k in same if k in tuned)  # fine-tuning moved the teacher
    raw["teacher"] = tiny_pipeline_dict()["teacher"]
    with pytest.raises(UserError, match="student.init: pretrained .* this teacher is of kind"):
        load_pipeline(write_pipeline(tmp_path / "q.yaml", raw))
