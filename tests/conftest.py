"""Shared fixtures: a tiny pipeline on the real digits data that runs end to end in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests import sshd
from tests.optional import have, install_line

REPO = Path(__file__).resolve().parents[1]


def tiny_pipeline_dict(**overrides) -> dict:
    spec = {
        "name": "tiny",
        "seed": 0,
        "device": "raspberry-pi-4",
        "budgets": {"max_accuracy_drop": 0.5},
        "data": {"kind": "digits"},
        "teacher": {"kind": "train", "family": "resnet", "width": 0.25, "depth": 0.5, "epochs": 2, "batch_size": 128},
        "student": {"family": "mobilenetv2", "width": 0.125, "depth": 0.5},
        # lr 0.05: 2 epochs take the student above chance level (at 0.01 it stays at 10 %, and no verdict "fits")
        "distill": {"epochs": 2, "batch_size": 128, "lr": 0.05, "baseline": "off"},  # tests of it turn it on
        "export": {"formats": ["onnx"]},
        "bench": {"warmup_runs": 2, "warmup_s": 0, "runs": 10, "min_time_s": 0, "emulate": "off"},  # see test_emulated
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def write_pipeline(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def pytest_configure(config):
    """Under pytest-xdist each worker trains on one thread (the CLI runs it starts inherit it): two workers of two
    threads each on two cores spin against each other (a 3-second test took 44 s), and no test measures speed."""
    if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The teacher-output cache of the tests lives in a temporary folder, never the user's home."""
    os.environ["EDGEDISTILL_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    os.environ.pop("EDGEDISTILL_CACHE", None)


@pytest.fixture
def tiny_pipeline(tmp_path) -> Path:
    return write_pipeline(tmp_path / "tiny.yaml", tiny_pipeline_dict())


def cli(*args, cwd=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    """Run the real `edgedistill` CLI in a subprocess (so exit codes and stderr are the user's)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("EDGEDISTILL_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "edgedistill", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


# The SSH tests' device: a real sshd on 127.0.0.1 (tests/sshd.py), one per test module that asks for it.
@pytest.fixture(scope="module")
def device(tmp_path_factory):
    if not have("sshd"):
        pytest.skip(f"needs sshd: {install_line('sshd')}")
    dev = sshd.Device(tmp_path_factory.mktemp("sshd"))
    yield dev
    dev.stop()


@pytest.fixture(scope="module")
def ssh_models(tmp_path_factory):
    """A real exported student (ONNX and, with the tflite extra, TFLite) and real digits as test data."""
    from sklearn.datasets import load_digits

    from edgedistill.export.formats import FORMATS
    from edgedistill.models import build_model

    folder = tmp_path_factory.mktemp("ssh-models")
    net = build_model("mobilenetv2", width=0.125, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8)).eval()
    out = {"onnx": FORMATS["onnx"].export(net, (1, 1, 8, 8), folder / "m.onnx", opset=17, metadata={})}
    try:
        out["tflite"] = FORMATS["tflite"].export(net, (1, 1, 8, 8), folder / "m.tflite", opset=17, metadata={})
    except Exception:  # noqa: BLE001 - without the tflite extra only ONNX is benched
        pass
    digits = load_digits()
    np.savez(folder / "test.npz", x=(digits.images[:40, None] / 16).astype(np.float32), y=digits.target[:40])
    return out, folder / "test.npz"
