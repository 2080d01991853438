"""The bundled quickstart, exactly as a new user runs it: `edgedistill run` with no argument."""

from __future__ import annotations

import json

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
    (art,) = results["artifacts"]
    assert art["status"] == "ok" and art["accuracy"] == pytest.approx(student["accuracy"], abs=1e-9)
    assert results["device"]["name"] == "raspberry-pi-4" and results["verdict"]["fits"] is True
    md = report.read_text()
    for piece in ("FITS", "teacher resnet", "student mobilenetv2", "p90 latency", "model size"):
        assert piece in md
