"""`edgedistill export` and `edgedistill quantize` on a finished run's student."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import cli, tiny_pipeline_dict, write_pipeline


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-export")
    path = write_pipeline(folder / "p.yaml", tiny_pipeline_dict())
    proc = cli("run", path, "--out", folder / "run", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder / "run"


def test_export_a_run_folder_with_parity(run_dir, tmp_path):
    out = tmp_path / "s.onnx"
    proc = cli("export", run_dir, "--format", "onnx", "--precision", "int8", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and "onnx int8:" in proc.stdout
    assert "top-1 agreement" in proc.stdout and "accuracy" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.onnx"]  # no fp32 file left that was not asked for


def test_quantize_an_exported_file_keeps_metadata(run_dir, tmp_path):
    from edgedistill.export.onnx import read_metadata

    calib = tmp_path / "calib.npz"
    with np.load(run_dir / "bench" / "test.npz") as arrays:
        np.savez(calib, x=arrays["x"][:32])
    proc = cli("quantize", run_dir / "export" / "student-fp32.onnx", "--precision", "int8", "--calibration-data",
               calib, "--calibration", "entropy", "--out", tmp_path / "q.onnx")
    assert proc.returncode == 0, proc.stderr
    meta = read_metadata(tmp_path / "q.onnx")
    assert meta["precision"] == "int8" and meta["calibration"] == "entropy" and meta["pipeline"] == "tiny"


@pytest.mark.parametrize("args,expected", [
    (["export", "{run}", "--format", "onnxx"], "unknown export format 'onnxx'; did you mean 'onnx'?"),
    (["export", "{run}", "--precision", "int4"], "--precision: unknown precision 'int4'"),
    (["export", "{tmp}/nothing.safetensors"], "nothing.safetensors: CHECKPOINT: file not found"),
    (["quantize", "{tmp}/model.pb"], "unknown model suffix '.pb'"),
    (["quantize", "{run}/export/student-fp32.onnx", "--precision", "int8"], "needs calibration samples"),
    (["quantize", "{run}/export/student-fp32.onnx", "--precision", "fp16", "--calibration", "kl"],
     "unknown calibration method 'kl'"),
    (["quantize", "{tmp}/junk.onnx", "--precision", "fp16"], "not a readable onnx model"),
])
def test_bad_arguments_are_one_line(run_dir, tmp_path, args, expected):
    (tmp_path / "junk.onnx").write_text("not a model")
    proc = cli(*[a.format(run=run_dir, tmp=tmp_path) for a in args])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr


def test_bench_command_local_json(run_dir):
    proc = cli("bench", run_dir / "export" / "student-fp32.onnx", "--target", "local", "--data",
               run_dir / "bench" / "test.npz", "--runs", "20", "--min-time-s", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["target"] == "local" and result["latency_ms"]["count"] >= 20 and result["accuracy"] is not None


@pytest.mark.parametrize("args,expected", [
    (["bench", "{tmp}/m.onnx"], "m.onnx: MODEL: file not found"),
    (["bench", "{run}/export/student-fp32.onnx", "--target", "telnet://x"], "--target 'telnet://x': expected"),
    (["bench", "{run}/export/student-fp32.onnx", "--target", "ssh://root@127.0.0.1:1"], "connection refused"),
])
def test_bench_command_errors(run_dir, tmp_path, args, expected):
    proc = cli(*[a.format(run=run_dir, tmp=tmp_path) for a in args])
    assert proc.returncode == 2 and expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
