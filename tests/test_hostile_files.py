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


def test_a_checkpoint_with_nan_weights_says_so(tmp_path):
    from edgedistill.errors import UserError
    from edgedistill.models.io import load_weights

    model = _teacher()
    state = model.state_dict()
    state["head.fc.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "teacher.pt")
    with pytest.raises(UserError, match=r"teacher.pt: the weights of 'head.fc.weight' hold NaN or inf"):
        load_weights(_teacher(), tmp_path / "teacher.pt")


def test_a_pickled_model_is_refused_without_advice_to_unpickle(tmp_path):
    from edgedistill.errors import UserError
    from edgedistill.models.io import load_weights

    torch.save(_teacher(), tmp_path / "whole-model.pt")  # a pickled nn.Module, not a state dict
    with pytest.raises(UserError, match="never unpickles code") as info:
        load_weights(_teacher(), tmp_path / "whole-model.pt")
    assert "weights_only=False" not in str(info.value)


@pytest.mark.parametrize("x, match", [(np.full((60, 8, 8), 1e39), "NaN or inf"),
                                      (np.full((60, 8, 8), 3e7, np.float32), "values up to 3e"),
                                      (np.full((60, 8, 8), 1 + 1j), "real numbers")])
def test_data_out_of_range_is_named_as_such(x, match, tmp_path):
    from edgedistill.config.pipeline import NpzData
    from edgedistill.errors import UserError

    np.savez(tmp_path / "d.npz", x=x, y=np.repeat(np.arange(3), 20))
    with pytest.raises(UserError, match=match):
        load_dataset(NpzData(kind="npz", path=tmp_path / "d.npz"), seed=0)


def test_a_diverging_loss_names_the_cause(data):
    """The guard says what went bad (weights, data, or the loss itself), not one generic hint for all."""
    import os as _os

    from rich.console import Console

    from edgedistill.config.pipeline import Training
    from edgedistill.distill.trainer import fit, why_non_finite
    from edgedistill.errors import StageFailed

    quiet = Console(file=open(_os.devnull, "w"))
    ce = lambda x, logits, y, idx, epoch: torch.nn.functional.cross_entropy(logits, y)  # noqa: E731
    broken = _teacher()
    with torch.no_grad():
        broken.head.fc.weight[0, 0] = float("nan")
    with pytest.raises(StageFailed, match=r"weights of 'head.fc.weight' hold NaN or inf: lower the learning rate"):
        fit(broken, data.train, data.val, ce, Training(epochs=1), seed=0, label="t", console=quiet)
    with pytest.raises(StageFailed, match=r"inputs and weights were finite, so the loss overflowed"):
        fit(_teacher(), data.train, data.val, lambda *a: ce(*a) * 1e39, Training(epochs=1), seed=0, label="t",
            console=quiet)
    x = torch.zeros(2, 1, 8, 8)
    x[0, 0, 0, 0] = float("inf")
    assert "input batch holds NaN or inf" in why_non_finite(x, _teacher())


def test_a_vanishing_temperature_is_refused_at_validation(tmp_path):
    from tests.conftest import tiny_pipeline_dict, write_pipeline

    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(distill={"temperature": 1e-300}))
    proc = cli("validate", path, cwd=tmp_path)
    assert proc.returncode == 2 and "distill.temperature" in proc.stderr and "0.05" in proc.stderr


def test_a_truncated_training_state_is_set_aside_not_fatal_forever(data, tmp_path):
    import io

    from rich.console import Console

    from edgedistill.config.pipeline import Training
    from edgedistill.distill.trainer import fit

    ce = lambda x, logits, y, idx, epoch: torch.nn.functional.cross_entropy(logits, y)  # noqa: E731
    state = tmp_path / "train-state-abc.pt"
    fit(_teacher(), data.train, data.val, ce, Training(epochs=1), seed=0, label="t",
        console=Console(file=io.StringIO()), state_path=state)
    state.write_bytes(state.read_bytes()[:1000])  # a crash or a full disk cut it short
    printed = io.StringIO()
    result = fit(_teacher(), data.train, data.val, ce, Training(epochs=2), seed=0, label="t",
                 console=Console(file=printed, width=200), state_path=state)
    assert result.resumed_from_epoch == 0 and len(result.history) == 2  # started over, and finished
    assert "set aside as train-state-abc.pt.damaged" in printed.getvalue()
    assert (tmp_path / "train-state-abc.pt.damaged").is_file()
    assert torch.load(state, weights_only=True)["epoch"] == 2  # a fresh state replaced it


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A real fp32 student in ONNX with its metadata, and the same model with its weights as external data."""
    import onnx

    from edgedistill.export.formats import FORMATS

    folder = tmp_path_factory.mktemp("quantize")
    model = build_model("mobilenetv2", width=0.125, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8))
    path = FORMATS["onnx"].export(model.eval(), (1, 1, 8, 8), folder / "m.onnx", opset=17,
                                     metadata={"input_shape": [None, 1, 8, 8], "precision": "fp32"})
    (folder / "ext").mkdir()
    onnx.save_model(onnx.load(str(path)), str(folder / "ext" / "m.onnx"), save_as_external_data=True,
                    location="m.onnx.data", size_threshold=0)
    return path, folder / "ext" / "m.onnx"


@pytest.mark.parametrize("x, match", [(np.zeros((5, 3, 32, 32), np.float32), r"expected \(N, 1, 8, 8\)"),
                                      (np.full((5, 1, 8, 8), np.nan, np.float32), "NaN or inf"),
                                      (np.array(["a", "b"]), "expected an .npz with array x")])
def test_quantize_with_bad_calibration_data_is_one_line(exported, x, match, tmp_path):
    np.savez(tmp_path / "calib.npz", x=x)
    proc = cli("quantize", exported[0], "--precision", "int8", "--calibration-data", tmp_path / "calib.npz",
               "--out", tmp_path / "q.onnx", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert "--calibration-data" in proc.stderr and __import__("re").search(match, proc.stderr), proc.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_a_model_with_external_data_quantizes(exported, tmp_path):
    import onnxruntime as ort

    proc = cli("quantize", exported[1], "--precision", "int8-dynamic", "--out", tmp_path / "q.onnx", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-1500:]
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 1, 8, 8), np.float32)})
    assert out.shape == (1, 10)
    (exported[1].parent / "m.onnx.data").rename(tmp_path / "gone.data")  # its weights file is missing
    proc = cli("quantize", exported[1], "--precision", "int8-dynamic", "--out", tmp_path / "q2.onnx", cwd=tmp_path)
    assert proc.returncode == 2 and "m.onnx.data" in proc.stderr and "Traceback" not in proc.stderr
