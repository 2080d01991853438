"""Files that lie: teacher-output cache entries, arch.json, checkpoints and training states (issue:
hardening round 2). Real files written, damaged and read back; no mocks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from edgedistill.config.pipeline import DigitsData
from edgedistill.data import load_dataset
from edgedistill.distill.cache import load_or_compute
from edgedistill.models import build_model
from tests.conftest import cli


@pytest.fixture(scope="module")
def data():
    return load_dataset(DigitsData(kind="digits"), seed=0)


def _teacher():
    torch.manual_seed(0)
    return build_model("resnet", width=0.25, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8))


def _entry(root):
    (folder,) = [p for p in (root / "teacher").iterdir() if not p.name.startswith(".")]
    return folder


def test_an_overwritten_cache_entry_is_detected_discarded_and_rebuilt(data, tmp_path):
    teacher = _teacher()
    first = load_or_compute(teacher, data.train.x, ["stages.0"], [], root=tmp_path)
    truth = np.array(first.logits)
    folder = _entry(tmp_path)
    # Overwrite the logits with other, well-formed values of the same shape: only the digest can tell.
    np.save(folder / "logits.npy", np.zeros_like(truth))
    again = load_or_compute(teacher, data.train.x, ["stages.0"], [], root=tmp_path)
    assert again.status.startswith("rebuilt") and "logits.npy" in again.status
    assert np.array_equal(again.logits, truth)
    assert load_or_compute(teacher, data.train.x, ["stages.0"], [], root=tmp_path).status == "hit"


def test_a_truncated_cache_entry_is_rebuilt_not_fatal(data, tmp_path):
    teacher = _teacher()
    truth = np.array(load_or_compute(teacher, data.train.x, ["stages.0"], [], root=tmp_path).logits)
    features = _entry(tmp_path) / "outputs-0.npy"
    features.write_bytes(features.read_bytes()[:100])
    again = load_or_compute(teacher, data.train.x, ["stages.0"], [], root=tmp_path)
    assert again.status.startswith("rebuilt") and np.array_equal(again.logits, truth)


def test_a_cache_that_cannot_be_written_costs_speed_not_the_run(data, tmp_path):
    teacher = _teacher()
    (tmp_path / "teacher").write_text("a file where the cache folder should be")
    result = load_or_compute(teacher, data.train.x, [], [], root=tmp_path)
    assert result.status.startswith("miss, not stored") and len(result.logits) == len(data.train)
    assert [p.name for p in tmp_path.iterdir()] == ["teacher"]  # nothing half-written left behind


def _arch(**change):
    arch = {"family": "mobilenetv2", "width": 0.125, "depth": 0.5, "in_channels": 1, "num_classes": 10,
            "input_hw": [8, 8], "class_names": [str(i) for i in range(10)]}
    arch.update(change)
    return arch


MALFORMED = {
    "not json": "{",
    "a list": "[1, 2]",
    "missing keys": json.dumps({"family": "resnet"}),
    "extra key": json.dumps({**_arch(), "code": "x"}),
    "string width": json.dumps(_arch(width="wide")),
    "negative channels": json.dumps(_arch(in_channels=-3)),
    "huge input": json.dumps(_arch(input_hw=[100000, 100000])),
    "names mismatch": json.dumps(_arch(class_names=["a"])),
    "boolean classes": json.dumps(_arch(num_classes=True)),
    "unknown family": json.dumps(_arch(family="resnett")),
}


@pytest.fixture(scope="module")
def student_weights(tmp_path_factory):
    from edgedistill.models.io import save_weights

    folder = tmp_path_factory.mktemp("weights")
    model = build_model("mobilenetv2", width=0.125, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8))
    save_weights(model, folder / "student.safetensors")
    return folder / "student.safetensors"


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_arch_json_is_one_line(case, student_weights, tmp_path):
    (tmp_path / "arch.json").write_text(MALFORMED[case])
    proc = cli("export", student_weights, "--arch", tmp_path / "arch.json", "--out", tmp_path / "m.onnx",
               cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert proc.stderr.startswith(f"error: {tmp_path / 'arch.json'}")
    assert not (tmp_path / "m.onnx").exists()


def test_an_arch_json_cannot_import_code_unless_allowed(student_weights, tmp_path):
    marker = tmp_path / "imported"
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef f(**kw):\n    raise SystemExit(9)\n")
    (tmp_path / "arch.json").write_text(json.dumps(_arch(family="evilmod:f")))
    proc = cli("export", student_weights, "--arch", tmp_path / "arch.json", cwd=tmp_path)
    assert proc.returncode == 2 and "--allow-factory" in proc.stderr and not marker.exists()
    proc = cli("export", student_weights, "--arch", tmp_path / "arch.json", "--allow-factory", cwd=tmp_path)
    assert marker.exists()  # asked for: the module is imported (and its factory runs)
    os.remove(marker)
