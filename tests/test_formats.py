"""The format table: every format is complete, reachable from every place that handles formats, and its two
runtime paths (parity's and the benchmark runner's) give the same outputs."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill.bench import runner
from edgedistill.config.device import DeviceProfile
from edgedistill.config.pipeline import Export
from edgedistill.export.formats import FORMATS, format_of
from edgedistill.models import build_model

NEEDS_TFLITE = pytest.mark.skipif(importlib.util.find_spec("litert_torch") is None,
                                  reason="the tflite extra (litert-torch) is not installed")
EVERY_FORMAT = [pytest.param(fmt, marks=NEEDS_TFLITE) if fmt == "tflite" else fmt for fmt in FORMATS]
EXTRAS = importlib.metadata.metadata("edgedistill").get_all("Provides-Extra")


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_is_reachable_everywhere(name):
    fmt = FORMATS[name]
    assert fmt.suffix in runner.RUNTIMES, f"bench/runner.py has no loader for {fmt.suffix}"
    assert fmt.extra in EXTRAS, f"pyproject.toml has no extra {fmt.extra!r}"
    assert format_of(Path(f"model{fmt.suffix}")) is fmt
    assert Export(formats=[name]).formats == [name]  # the pipeline schema takes it
    assert name in DeviceProfile.model_fields["default_format"].annotation.__args__
    assert fmt.runtime in DeviceProfile.model_fields["runtimes"].annotation.__args__[0].__args__
    assert fmt.calibration_methods and fmt.calibration_methods[0] == "minmax"  # the pipeline's default method


@pytest.mark.parametrize("name", EVERY_FORMAT)
def test_parity_outputs_agree_with_the_benchmark_runner(name, tmp_path):
    """What parity compares and what the benchmark times must be the same model on the same runtime: the
    format's `outputs` and the runner's loader give the same logits on real digits."""
    from sklearn.datasets import load_digits

    fmt = FORMATS[name]
    net = build_model("mobilenetv2", width=0.125, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8)).eval()
    path = fmt.export(net, (1, 1, 8, 8), tmp_path / f"m{fmt.suffix}", opset=17, metadata={"answer": 42})
    assert fmt.read_metadata(path)["answer"] == 42
    x = (load_digits().images[:16, None] / 16).astype(np.float32)
    ours = fmt.outputs(path, x)
    run = runner.RUNTIMES[fmt.suffix](str(path), 1, ["CPUExecutionProvider"])
    theirs = np.concatenate([run(x[i:i + 1]) for i in range(len(x))])
    with torch.no_grad():
        reference = net(torch.from_numpy(x)).numpy()
    assert ours.shape == theirs.shape == reference.shape == (16, 10)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_an_unknown_suffix_names_the_valid_ones():
    from edgedistill.errors import UserError

    with pytest.raises(UserError, match=r"'\.pb'.*\.onnx.*\.tflite"):
        format_of(Path("model.pb"))
