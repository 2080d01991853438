"""The bundled quickstart, exactly as a new user runs it: `edgedistill run` with no argument."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from tests.conftest import cli


@pytest.mark.slow
def test_quickstart_meets_its_promise(tmp_path):
    proc = cli("run", cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr
    report = tmp_path / proc.stdout.strip().removeprefix("report: ")
    results = json.loads((report.parent / "results.json").read_text())
    teacher, student = results["teacher"], results["student"]
    # The student keeps at least 95 % of the teacher's test accuracy with at most 5 % of its parameters.
    assert student["accuracy"] >= 0.95 * teacher["accuracy"]
    assert student["params"] <= 0.05 * teacher["params"]
    artifacts = {(a["format"], a["requested_precision"]): a for a in results["artifacts"]}
    assert set(artifacts) == {("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")}
    if importlib.util.find_spec("litert_torch") is None:  # installed without the tflite extra
        assert "pip install 'edgedistill[tflite]'" in artifacts["tflite", "fp32"]["error"]
        artifacts = {k: v for k, v in artifacts.items() if k[0] != "tflite"}
    for (fmt, precision), art in artifacts.items():
        assert art["status"] == "ok", (fmt, precision, art["error"])
        assert art["latency_ms"]["p90"] > 0
        if precision == "fp32":
            # fp32 artifacts give the PyTorch student's accuracy on the real runtime.
            assert art["accuracy"] == pytest.approx(student["accuracy"], abs=1e-9)
            assert art["parity"]["top1_agreement"] >= 0.995
        if precision == "int8":  # the gate says whose integer kernels judged it: the Pi's core where qemu is here
            judged = art["gate_judged_on"]
            if art["arm"] is not None:
                assert " on emulated cortex-a72 (qemu: raspberry-pi-4's ARM kernels); this host (" in judged, judged
                assert all(a["judged_on"] == "emulated cortex-a72" for a in art["attempts"] if a["precision"] != "fp32")
                assert all(a["host_accuracy"] is not None for a in art["attempts"])
            else:
                assert " on this host (" in judged and judged.endswith(", not on raspberry-pi-4"), judged
        if art["arm"] is not None:  # qemu-user installed (CI installs it): the artifact also ran on ARM kernels
            assert art["arm"]["status"] == "ok" and art["arm"]["cpu"] == "cortex-a72"
            assert art["arm"]["machine"] == "aarch64" and art["arm"]["top1_agreement"] >= 0.95
    # Every figure was measured on this host: the verdict says so, and never that the Pi was measured.
    verdict = results["verdict"]
    assert results["device"]["name"] == "raspberry-pi-4" and verdict["fits"] is True
    assert verdict["scope"] == "stand-in" and verdict["fits_device"] is None
    assert "standing in for raspberry-pi-4 (not measured on raspberry-pi-4); predicted p90 on" in verdict["summary"]
    assert "standing in for raspberry-pi-4" in proc.stderr  # the run's closing line
    # What distilling gained over the same student from labels alone, or that the scratch student shipped.
    assert re.search(r"; (distilling (gained|lost) [\d.]+ points|the scratch student shipped)", verdict["summary"])
    # The accuracies are this machine's, and the run says so.
    assert "another CPU or thread count trains slightly different weights" in proc.stderr
    md = report.read_text()
    for piece in ("FITS ON THIS HOST, STANDING IN", "teacher resnet", "student mobilenetv2", "p90 latency",
                  "model size", "Quantization gate", "measured on this host, standing in for the device"):
        assert piece in md
