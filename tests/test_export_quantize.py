"""Export and parity for every format and precision, metadata, the accuracy gate, failing conversions."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from edgedistill.config.pipeline import DigitsData
from edgedistill.data import load_dataset
from edgedistill.distill.trainer import accuracy, predict
from edgedistill.export.formats import FORMATS, PRECISIONS, artifact_name
from edgedistill.export.parity import compare
from edgedistill.quantize.gate import run_gate

# ONNX needs only the onnx extra; the TFLite cases are skipped, one by one, without the tflite extra.
pytest.importorskip("onnxruntime")
NEEDS_TFLITE = pytest.mark.skipif(importlib.util.find_spec("litert_torch") is None,
                                  reason="the tflite extra (litert-torch) is not installed")
EVERY_FORMAT = [pytest.param(fmt, marks=NEEDS_TFLITE) if fmt == "tflite" else fmt for fmt in FORMATS]


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DigitsData(kind="digits"), seed=0)


class LinearDigits(nn.Module):
    """A real classifier (logistic regression fitted on digits) in two linear layers.

    With `outlier`, the hidden layer carries one extra unit fixed at 10,000: per-tensor int8 activations
    then have a step of ~40, far coarser than the logits' spread, so plain int8 destroys accuracy.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, outlier: bool):
        super().__init__()
        k = weight.shape[0]
        extra = 1 if outlier else 0
        self.hidden = nn.Linear(weight.shape[1], k + extra)
        self.out = nn.Linear(k + extra, k)
        with torch.no_grad():
            self.hidden.weight.zero_()
            self.hidden.weight[:k] = torch.from_numpy(weight)
            self.hidden.bias.zero_()
            self.hidden.bias[:k] = torch.from_numpy(bias)
            if outlier:
                self.hidden.bias[k] = 1e4
            self.out.weight.zero_()
            self.out.weight[:, :k] = torch.eye(k)
            self.out.bias.zero_()

    def forward(self, x):
        return self.out(self.hidden(x.flatten(1)))


@pytest.fixture(scope="module")
def linear_weights(digits):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000).fit(digits.train.x.reshape(len(digits.train), -1), digits.train.y)
    return clf.coef_.astype(np.float32), clf.intercept_.astype(np.float32)


@pytest.fixture(scope="module")
def cnn(digits):
    """A small trained CNN student (a few epochs on digits) for the format/precision matrix. Width 0.5: one
    training of width 0.25 here lost 7 points to static int8 (how the gate handles such a loss is tested below);
    this matrix checks that every export path keeps a quantization-friendly model's predictions."""
    import os

    import torch.nn.functional as F
    from rich.console import Console

    from edgedistill.config.pipeline import Distill
    from edgedistill.distill.trainer import fit
    from edgedistill.models import build_model

    torch.manual_seed(0)
    model = build_model("mobilenetv2", width=0.5, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8))
    fit(model, digits.train, digits.val, lambda x, logits, y, idx, epoch: F.cross_entropy(logits, y),
        Distill(epochs=8, batch_size=32, lr=0.01), seed=0, label="t", console=Console(file=open(os.devnull, "w")))
    return model.eval()


META = {"pipeline": "t", "input_shape": [None, 1, 8, 8], "precision": "fp32", "class_names": list("0123456789")}


@pytest.mark.parametrize("fmt", EVERY_FORMAT)
def test_every_precision_exports_with_parity_and_metadata(cnn, digits, tmp_path, fmt):
    conv = FORMATS[fmt]
    fp32 = tmp_path / artifact_name(fmt, "fp32")
    conv.export(cnn, (1, 1, 8, 8), fp32, opset=17, metadata=META)
    reference = predict(cnn, digits.test.x)
    torch_acc = accuracy(reference, digits.test.y)
    for precision in PRECISIONS:
        path = conv.variant(fp32, tmp_path / artifact_name(fmt, precision), precision, digits.train.x[:64],
                            "minmax", [], META)
        parity = compare(reference, FORMATS[fmt].outputs(path, digits.test.x), digits.test.y, 1e-4, fmt)
        meta = FORMATS[fmt].read_metadata(path)
        assert meta["precision"] == precision and meta["class_names"] == list("0123456789")
        if precision == "fp32":
            assert parity.within_tolerance and parity.top1_agreement >= 0.995
        elif precision == "fp16":
            assert parity.top1_agreement >= 0.99
        else:
            assert parity.top1_agreement >= 0.95 and torch_acc - parity.accuracy <= 0.03, (precision, parity)


@NEEDS_TFLITE
def test_tflite_full_int8_has_int8_io_and_the_runner_converts_it(cnn, digits, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from edgedistill.bench.local import run_local

    conv = FORMATS["tflite"]
    fp32 = conv.export(cnn, (1, 1, 8, 8), tmp_path / "m.tflite", opset=17, metadata=META)
    int8 = conv.variant(fp32, tmp_path / "m-int8.tflite", "int8", digits.train.x[:64], "minmax", [], META)
    interpreter = Interpreter(model_path=str(int8))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    data = tmp_path / "test.npz"
    np.savez(data, x=digits.test.x, y=digits.test.y)
    result = run_local(int8, data, threads=1, warmup_runs=1, warmup_s=0, runs=5, min_time_s=0, timeout_s=120)
    assert result["runtime"]["input_dtype"] == "int8"
    assert result["accuracy"] == pytest.approx(accuracy(FORMATS["tflite"].outputs(int8, digits.test.x),
                                                        digits.test.y))


@NEEDS_TFLITE
def test_tflite_int8_ranges_cover_every_calibration_sample_not_their_moving_average(cnn, digits, tmp_path):
    """The first calibration sample spans ten times the others' range: its extremes set the input's int8 range
    (ai-edge-quantizer's default moving average would have shrunk it to about 4.4 by the 20th sample)."""
    from ai_edge_litert.interpreter import Interpreter

    conv = FORMATS["tflite"]
    fp32 = conv.export(cnn, (1, 1, 8, 8), tmp_path / "m.tflite", opset=17, metadata=META)
    x = np.random.default_rng(0).uniform(-1, 1, (20, 1, 8, 8)).astype(np.float32)
    x[0, 0, 0, :2] = [-10.0, 10.0]
    int8 = conv.variant(fp32, tmp_path / "m-int8.tflite", "int8", x, "minmax", [], META)
    scale, _ = Interpreter(model_path=str(int8)).get_input_details()[0]["quantization"]
    assert scale * 255 == pytest.approx(20.0, rel=0.02)


@pytest.mark.parametrize("fmt", EVERY_FORMAT)
def test_gate_falls_back_when_int8_breaks(linear_weights, digits, tmp_path, fmt):
    model = LinearDigits(*linear_weights, outlier=True).eval()
    plain_acc = accuracy(predict(model, digits.val.x), digits.val.y)
    assert plain_acc > 0.9  # a real, good classifier
    conv = FORMATS[fmt]
    fp32 = conv.export(model, (1, 1, 8, 8), tmp_path / artifact_name(fmt, "fp32"), opset=17, metadata=META)
    gate = run_gate(
        "int8", reference_accuracy=plain_acc, max_drop=0.02, calibration="minmax",
        other_calibrations=list(conv.calibration_methods), workdir=tmp_path,
        make=lambda p, calib, keep, dest, narrow: conv.variant(fp32, dest.with_suffix(FORMATS[fmt].suffix), p,
                                                              digits.train.x[:128], calib, keep, META, narrow),
        narrow_weights=conv.narrow_weights,
        evaluate=lambda path: accuracy(FORMATS[fmt].outputs(path, digits.val.x), digits.val.y),
        first_and_last=lambda: conv.first_and_last_layers(fp32))
    first = gate.attempts[0]
    assert first.precision == "int8" and not first.passed and first.drop > 0.2  # int8 really broke it
    assert gate.final is not None and gate.final.passed and gate.fell_back
    assert gate.final.drop <= 0.02
    assert all(a.reason for a in gate.attempts) and gate.final.reason != "as requested"
    # ONNX tries 7-bit weights (reduce_range) before keeping layers in float; TFLite cannot store them.
    narrow = [a for a in gate.attempts if a.reduce_range]
    if fmt == "onnx":
        assert len(narrow) == 1 and "7-bit weights (reduce_range)" in narrow[0].reason and narrow[0].path.exists()
        assert FORMATS["onnx"].read_metadata(narrow[0].path)["weights"] == "7-bit (reduce_range)"
    else:
        assert narrow == []


def test_gate_passes_a_healthy_model_first_time(linear_weights, digits, tmp_path):
    model = LinearDigits(*linear_weights, outlier=False).eval()
    conv = FORMATS["onnx"]
    fp32 = conv.export(model, (1, 1, 8, 8), tmp_path / "m.onnx", opset=17, metadata=META)
    gate = run_gate(
        "int8", reference_accuracy=accuracy(predict(model, digits.val.x), digits.val.y), max_drop=0.02,
        calibration="minmax", other_calibrations=["minmax"], workdir=tmp_path,
        make=lambda p, calib, keep, dest, narrow: conv.variant(fp32, dest.with_suffix(".onnx"), p,
                                                              digits.train.x[:128], calib, keep, META, narrow),
        evaluate=lambda path: accuracy(FORMATS["onnx"].outputs(path, digits.val.x), digits.val.y),
        first_and_last=lambda: conv.first_and_last_layers(fp32))
    assert len(gate.attempts) == 1 and gate.final.passed and not gate.fell_back


class BranchyNet(nn.Module):
    """Data-dependent control flow: TorchScript tracing (ONNX) records the branch its sample input (zeros) takes;
    torch.export (litert) cannot, so the TFLite conversion fails and must not take the ONNX export down with it.
    Digits are never negative, so the traced branch is the one the data takes."""

    def __init__(self, *, width=1.0, depth=1.0, in_channels=1, num_classes=10, input_hw=(8, 8)):
        super().__init__()
        self.fc = nn.Linear(in_channels * input_hw[0] * input_hw[1], num_classes)

    def forward(self, x):
        if x.sum() >= 0:
            return self.fc(x.flatten(1))
        return -self.fc(x.flatten(1))


class MistracedNet(BranchyNet):
    """The same, with the branch the zeros take being the one the data never takes: the ONNX file computes
    something else than the model."""

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x.flatten(1))
        return -self.fc(x.flatten(1))


@NEEDS_TFLITE
def test_a_failing_conversion_does_not_stop_the_others(tmp_path, monkeypatch):
    import json
    import os

    from rich.console import Console

    from edgedistill import models
    from edgedistill.config.device import load_device
    from edgedistill.config.pipeline import load_pipeline
    from edgedistill.pipeline.engine import run_pipeline
    from edgedistill.stages import default_stages
    from tests.conftest import tiny_pipeline_dict, write_pipeline

    # Registered for this test only (monkeypatch restores the registry afterwards).
    monkeypatch.setitem(models._FAMILIES, "branchy", "tests.test_export_quantize:BranchyNet")
    spec = load_pipeline(write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(
        student={"family": "branchy", "width": 1.0, "depth": 1.0},
        export={"formats": ["tflite", "onnx"], "precisions": ["fp32"]})))
    manifest = run_pipeline(spec, load_device(spec.device), default_stages(), tmp_path / "run",
                            console=Console(file=open(os.devnull, "w")))
    arts = {a["format"]: a for a in manifest.stages["export"].metrics["artifacts"]}
    assert arts["tflite"]["status"] == "failed" and arts["tflite"]["error"]
    assert arts["onnx"]["status"] == "ok"
    assert manifest.stages["export"].status == "completed" and manifest.stages["bench"].status == "completed"
    results = json.loads((tmp_path / "run" / "report" / "results.json").read_text())
    assert any(f.startswith("tflite fp32:") for f in results["failures"])
    assert "tflite" in (tmp_path / "run" / "report" / "report.md").read_text()


def test_an_artifact_that_computes_something_else_fails_parity(tmp_path, monkeypatch):
    """Parity gates: an fp32 ONNX file whose outputs are not the model's is a failed artifact with its numbers,
    not a warning beside a shipped file."""
    import os

    from rich.console import Console

    from edgedistill import models
    from edgedistill.config.device import load_device
    from edgedistill.config.pipeline import load_pipeline
    from edgedistill.pipeline.engine import run_pipeline
    from edgedistill.stages import default_stages
    from tests.conftest import tiny_pipeline_dict, write_pipeline

    monkeypatch.setitem(models._FAMILIES, "mistraced", "tests.test_export_quantize:MistracedNet")
    spec = load_pipeline(write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(
        student={"family": "mistraced", "width": 1.0, "depth": 1.0}, export={"formats": ["onnx"]})))
    manifest = run_pipeline(spec, load_device(spec.device), default_stages(), tmp_path / "run",
                            console=Console(file=open(os.devnull, "w")))
    assert manifest.stages["export"].status == "failed"
    assert "no artifact exported: parity: max |Δ|" in manifest.stages["export"].error
    assert "exceeds export.parity.fp32_atol 0.0001" in manifest.stages["export"].error


def test_parity_tolerances_per_precision():
    from edgedistill.config.pipeline import Export, Parity

    parity = Parity()
    assert parity.problem("fp32", 2e-4, 1.0, 10.0).startswith("max |Δ| 2.00e-04 exceeds export.parity.fp32_atol")
    assert parity.problem("fp32", 5e-5, 0.5, 10.0) is None  # fp32 is judged by its outputs, not agreement
    assert parity.problem("fp16", 0.05, 1.0, 10.0) is None and parity.problem("fp16", 0.2, 1.0, 10.0)  # 1 % of 10
    assert parity.problem("int8", 3.0, 0.95, 10.0) is None  # int8 outputs move; agreement is its floor
    assert "below export.parity.min_agreement 90%" in parity.problem("int8-dynamic", 0.1, 0.8, 10.0)
    # Pipelines written before parity and gate were sections still read the same.
    old = Export(parity_atol=1e-3, gate=False)
    assert old.parity.fp32_atol == 1e-3 and old.gate.enabled is False and old.gate.max_drop == 0.01


def test_calibration_draws_every_class_from_a_class_sorted_split():
    from edgedistill.data import stratified_indices

    labels = np.repeat(np.arange(10), 100)  # sorted by class: the first 128 rows are classes 0 and 1
    picked = stratified_indices(labels, 128, seed=0)
    counts = np.bincount(labels[picked], minlength=10)
    assert len(picked) == 128 and counts.min() >= 12 and counts.max() <= 13
    assert np.array_equal(picked, stratified_indices(labels, 128, seed=0))
    assert not np.array_equal(picked, stratified_indices(labels, 128, seed=1))
    assert np.array_equal(stratified_indices(labels[:50], 128, seed=0), np.arange(50))


@NEEDS_TFLITE
def test_tflite_records_the_calibration_it_used(tmp_path):
    """ai-edge-quantizer calibrates by min/max only: asked for entropy, the artifact says minmax, and a warning
    says why."""
    from tests.conftest import cli, tiny_pipeline_dict, write_pipeline

    # The student of lr 0.01 (near chance, its int8 agrees with it on most samples): the gate is off, parity is not
    spec = tiny_pipeline_dict(export={"formats": ["tflite"], "precisions": ["int8"], "gate": {"enabled": False},
                                      "calibration": {"method": "entropy", "samples": 64}}, distill={"lr": 0.01})
    r = cli("run", write_pipeline(tmp_path / "p.yaml", spec), "--out", tmp_path / "run", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "calibration entropy is not available" in " ".join(r.stderr.split())
    assert FORMATS["tflite"].read_metadata(tmp_path / "run" / "export" / "student-int8.tflite")["calibration"] == \
        "minmax"
