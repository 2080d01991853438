"""The self-contained benchmark runner, run as a subprocess the way it runs on a device."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import numpy as np
import pytest

from edgedistill.bench.local import RUNNER, BenchFailed, run_local


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    """A real model exported from the MobileNetV2-style family, and real digits as test data."""
    from sklearn.datasets import load_digits

    from edgedistill.export.onnx import torch_to_onnx
    from edgedistill.models import build_model

    folder = tmp_path_factory.mktemp("runner")
    model = build_model("mobilenetv2", width=0.125, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8))
    path = torch_to_onnx(model, (1, 1, 8, 8), folder / "m.onnx", opset=17, metadata={"pipeline": "t"})
    digits = load_digits()
    data = folder / "test.npz"
    np.savez(data, x=(digits.images[:50, None] / 16).astype(np.float32), y=digits.target[:50])
    return path, data


def _runner(*args):
    proc = subprocess.run([sys.executable, str(RUNNER), *map(str, args)], capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(proc.stdout)


def test_runner_imports_only_stdlib_numpy_and_runtimes():
    tree = ast.parse(RUNNER.read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "__future__"}
    assert modules <= allowed, modules - allowed


def test_runner_measures(onnx_model):
    model, data = onnx_model
    code, result = _runner("--model", model, "--data", data, "--threads", "1", "--cores", "0", "--runs", "30",
                           "--min-time-s", "0", "--warmup-runs", "3", "--warmup-s", "0")
    assert code == 0 and result["status"] == "ok"
    lat = result["latency_ms"]
    assert lat["count"] == 30 and lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert result["init_ms"] > 0 and result["first_inference_ms"] > 0 and result["warmup_runs"] == 3
    assert result["samples"] == 50 and 0 <= result["accuracy"] <= 1
    # Peak RSS is the runner's own (VmHWM), not inherited from the parent's peak across fork+exec.
    assert 5 < result["peak_rss_mb"] < 400
    assert result["runtime"]["providers"] == ["CPUExecutionProvider"] and result["cores"] == "0"
    assert result["device"]["cpu_count"] >= 1


def test_runner_time_floor_extends_runs(onnx_model):
    model, data = onnx_model
    code, result = _runner("--model", model, "--data", data, "--runs", "5", "--min-time-s", "0.2",
                           "--warmup-s", "0")
    assert code == 0 and result["latency_ms"]["count"] > 5


@pytest.mark.parametrize("args,code,match", [
    (["--model", "{tmp}/m.bin"], 2, "unknown suffix"),
    (["--model", "{tmp}/missing.onnx"], 4, "could not load"),
    (["--model", "{tmp}/junk.onnx"], 4, "could not load"),
    (["--data", "{tmp}/junk.npz"], 2, "expected an .npz"),
    (["--data", "{tmp}/empty.npz"], 2, "need the same, > 0"),
])
def test_runner_exit_codes(onnx_model, tmp_path, args, code, match):
    model, data = onnx_model
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, int))
    argv = {"--model": str(model), "--data": str(data)}
    for flag, value in zip(args[::2], args[1::2]):
        argv[flag] = value.format(tmp=tmp_path)
    got, result = _runner(*[x for kv in argv.items() for x in kv], "--runs", "2", "--min-time-s", "0")
    assert got == code and result["status"] == "failed" and match in result["error"]


def test_local_transport_reports_failures_as_one_line(onnx_model, tmp_path):
    model, data = onnx_model
    result = run_local(model, data, threads=1, warmup_runs=1, warmup_s=0, runs=5, min_time_s=0, timeout_s=60)
    assert result["status"] == "ok"
    with pytest.raises(BenchFailed, match="runner exited 4: onnxruntime could not load"):
        run_local(tmp_path / "x.onnx", data, threads=1, warmup_runs=1, warmup_s=0, runs=5, min_time_s=0, timeout_s=60)
    with pytest.raises(BenchFailed, match="timed out"):
        run_local(model, data, threads=1, warmup_runs=1, warmup_s=0, runs=5, min_time_s=0, timeout_s=0.001)


def test_peak_rss_does_not_grow_with_the_test_split(tmp_path):
    """The runner streams the test split a chunk at a time and times a fixed set of samples, so its peak RSS is
    the runtime's and the model's: 20,000 32x32 test images (78 MB as float32; loaded whole and copied by the
    earlier runner, they took its peak from 61 to 185 MB) leave it where 64 images leave it, and every one of
    them is still scored."""
    from edgedistill.export.onnx import torch_to_onnx
    from edgedistill.models import build_model

    model = build_model("mobilenetv2", width=0.125, depth=0.5, in_channels=1, num_classes=10, input_hw=(32, 32))
    path = torch_to_onnx(model.eval(), (1, 1, 32, 32), tmp_path / "m.onnx", opset=17, metadata={})
    rng = np.random.default_rng(0)
    peaks, results = {}, {}
    for n in (64, 20_000):
        data = tmp_path / f"test-{n}.npz"
        np.savez(data, x=rng.random((n, 1, 32, 32), dtype=np.float32), y=rng.integers(0, 10, n))
        result = run_local(path, data, threads=1, warmup_runs=1, warmup_s=0, runs=20, min_time_s=0, timeout_s=300)
        results[n] = result
        peaks[n] = (result["peak_rss_mb"], result["peak_rss_with_data_mb"])
    print("peak RSS (timing, with the accuracy pass) by test-split size:", peaks)
    assert results[20_000]["samples"] == 20_000 and results[20_000]["accuracy"] is not None
    assert peaks[20_000][0] - peaks[64][0] < 10, peaks  # while timing: the same samples either way
    assert peaks[20_000][1] - peaks[64][1] < 10, peaks  # with the accuracy pass: one chunk at a time
    assert results[20_000]["data_mb"] < 2 and results[20_000]["input_conversion_ms"] >= 0
