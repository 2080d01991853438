"""Where training runs: `train.device` and `train.precision`, checked on this CPU-only machine (the GPU path is
benchmarks/gpu_check.py's, run where a GPU is lent)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from edgedistill.config.pipeline import Training
from edgedistill.data import Split
from edgedistill.distill.compute import Compute, resolve
from edgedistill.distill.trainer import fit
from edgedistill.errors import UserError
from edgedistill.models import build_model
from tests.conftest import cli, tiny_pipeline_dict, write_pipeline


def _digits(n=256):
    from sklearn.datasets import load_digits

    d = load_digits()
    return Split((d.images[:n, None] / 16).astype(np.float32), d.target[:n].astype(np.int64))


def _train(compute: Compute, epochs=2):
    torch.manual_seed(0)
    model = build_model("mobilenetv2", width=0.25, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = _digits()
    result = fit(model, data, data, lambda x, logits, y, idx, e: F.cross_entropy(logits, y),
                 Training(epochs=epochs, batch_size=64, lr=0.01), seed=0, label="t", console=Console(quiet=True),
                 compute=compute)
    return model, before, result


def test_auto_is_the_cpu_here_and_a_missing_gpu_is_one_line():
    assert resolve("auto").device.type == "cpu" and resolve("cpu", "bf16").precision == "bf16"
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"train.device: 'cuda', but torch sees no CUDA device here"):
            resolve("cuda")


def test_a_gpu_machine_resolves_auto_to_this_rank_s_gpu_and_cpu_stays_cpu(monkeypatch):
    """With CUDA present (pretended: nothing runs on it), auto and cuda mean LOCAL_RANK's GPU; cpu never
    touches CUDA."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve("auto").device == torch.device("cuda", 1) and chosen == [1]
    assert resolve("cuda:0").device == torch.device("cuda", 0)
    with pytest.raises(UserError, match="cuda:5, but this machine has 2 CUDA device"):
        resolve("cuda:5")
    chosen.clear()
    assert resolve("cpu").device.type == "cpu" and chosen == []


def test_training_on_the_cpu_never_touches_cuda(monkeypatch):
    """`device: cpu` on a machine that has CUDA: no tensor goes there (any move would raise here)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda *a, **k: pytest.fail("a tensor was sent to CUDA"))
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda *a, **k: pytest.fail("pinned memory on a CPU run"))
    model, before, result = _train(resolve("cpu"))
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(v.device.type == "cpu" for v in result.best_state.values())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_returns_float32_weights(precision):
    """autocast runs the forward pass in bf16/fp16 (fp16 with a gradient scaler); the weights stay float32,
    and the training matches fp32's within what the precision allows."""
    model, before, result = _train(Compute(torch.device("cpu"), precision), epochs=3)
    _, _, reference = _train(Compute(torch.device("cpu"), "fp32"), epochs=3)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert np.isfinite(result.history[-1]["train_loss"])
    assert abs(result.history[-1]["train_loss"] - reference.history[-1]["train_loss"]) < 0.2


def test_a_pipeline_asking_for_a_missing_gpu_stops_before_any_work(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    spec = tiny_pipeline_dict(train={"device": "cuda"})
    r = cli("run", write_pipeline(tmp_path / "p.yaml", spec), "--out", tmp_path / "run")
    assert r.returncode == 2 and "train.device: 'cuda', but torch sees no CUDA device" in r.stderr
    assert not (tmp_path / "run" / "teacher").exists()
