"""A newcomer's path, end to end, through the installed console script: their own .npz of (N, H, W) images,
their own model module in the working folder, a student sized by the device (`size: auto`), then `export`,
`report`, `report --compare` and `bench --data` on the run, with nothing but the README's commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgedistill.config.pipeline import load_pipeline

SCRIPT = shutil.which("edgedistill", path=str(Path(sys.executable).parent)) or shutil.which("edgedistill")
pytestmark = pytest.mark.skipif(SCRIPT is None, reason="the edgedistill console script is not installed")

MODULE = '''
import torch

def small_cnn(width, depth, in_channels, num_classes, input_hw):
    channels = int(32 * width)
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, channels, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(channels, channels, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(channels, num_classes))
'''


def edgedistill(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEDISTILL_DEBUG")}
    return subprocess.run([SCRIPT, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    from sklearn.datasets import load_digits

    home = tmp_path_factory.mktemp("newcomer")
    digits = load_digits()
    np.savez(home / "mydata.npz", x=(digits.images[:700] / 16).astype(np.float32), y=digits.target[:700])
    (home / "mymodels.py").write_text(MODULE)
    pipeline = {
        "name": "my-first", "device": "raspberry-pi-4", "budgets": {"max_accuracy_drop": 0.9},
        "data": {"kind": "npz", "path": "mydata.npz"},
        "teacher": {"kind": "train", "family": "mymodels:small_cnn", "width": 1.0, "epochs": 2, "batch_size": 64},
        "student": {"family": "mobilenetv2", "size": "auto", "max_param_ratio": 0.5},
        "distill": {"epochs": 2, "batch_size": 64, "lr": 0.01},
        "export": {"formats": ["onnx"]},
        "bench": {"warmup_runs": 2, "warmup_s": 0, "runs": 10, "min_time_s": 0},
    }
    (home / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    proc = edgedistill("validate", "pipeline.yaml", cwd=home)
    assert proc.returncode == 0, proc.stderr
    proc = edgedistill("run", "pipeline.yaml", "--out", "run", cwd=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return home


def test_an_auto_run_records_its_choice_as_a_fixed_student(auto_run):
    spec = load_pipeline(auto_run / "run" / "pipeline.resolved.yaml")
    arch = json.loads((auto_run / "run" / "student" / "arch.json").read_text())
    assert spec.student.size == "fixed" and spec.student.chosen_by == "auto"
    assert (spec.student.width, spec.student.depth) == (arch["width"], arch["depth"])


def test_every_command_reads_the_auto_run(auto_run):
    proc = edgedistill("export", "run", "--format", "onnx", "--precision", "int8-dynamic", cwd=auto_run)
    assert proc.returncode == 0 and "parity:" in proc.stdout, proc.stderr[-1500:]
    proc = edgedistill("report", "run", cwd=auto_run)
    assert proc.returncode == 0, proc.stderr[-1500:]
    proc = edgedistill("report", "--compare", "run", "run", "--out", "cmp", cwd=auto_run)
    assert proc.returncode == 0 and (auto_run / "cmp" / "compare.html").is_file(), proc.stderr[-1500:]


def test_bench_takes_the_data_run_takes(auto_run):
    proc = edgedistill("bench", "run/export/student-fp32.onnx", "--data", "mydata.npz", "--runs", "5",
                       "--min-time-s", "0", "--json", cwd=auto_run)
    assert proc.returncode == 0, proc.stderr[-1500:]
    result = json.loads(proc.stdout)
    assert result["samples"] == 700 and 0 <= result["accuracy"] <= 1
    np.savez(auto_run / "other.npz", x=np.zeros((5, 16, 16), np.float32), y=np.zeros(5, np.int64))
    proc = edgedistill("bench", "run/export/student-fp32.onnx", "--data", "other.npz", cwd=auto_run)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "x has shape (5, 1, 16, 16); the model takes (N, 1, 8, 8)" in proc.stderr
