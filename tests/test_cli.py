"""The CLI as a user drives it: devices, a whole run, refusals, and kill -9 then --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import cli, tiny_pipeline_dict, write_pipeline


def test_devices_list_and_show():
    proc = cli("devices", "list")
    assert proc.returncode == 0
    for name in ("raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano", "mobile-cpu", "host"):
        assert name in proc.stdout
    proc = cli("devices", "show", "raspberry-pi-5")
    assert proc.returncode == 0 and "Cortex-A76" in proc.stdout and "max_latency_p90_ms" in proc.stdout
    proc = cli("devices", "show", "raspberry-pi-6")
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown device 'raspberry-pi-6'")


def test_validate_command(tiny_pipeline, tmp_path):
    from edgedistill.resources import bundled_dir

    proc = cli("validate", tiny_pipeline, bundled_dir("devices") / "jetson-nano.yaml")
    assert proc.returncode == 0 and proc.stdout.count("ok: ") == 2


def test_run_end_to_end_prints_report_location(tiny_pipeline, tmp_path):
    proc = cli("run", tiny_pipeline, "--seed", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.strip().splitlines()
    report = tmp_path / line.removeprefix("report: ")
    assert report.name == "report.html" and report.exists()
    run_dir = report.parent.parent
    assert run_dir.parent == tmp_path / "runs" / "tiny"
    results = json.loads((run_dir / "report" / "results.json").read_text())
    assert results["environment"]["seed"] == 3 and results["artifacts"][0]["status"] == "ok"
    assert "verdict:" in proc.stderr
    # The same folder again without --resume is refused: nothing is overwritten.
    proc = cli("run", tiny_pipeline, "--out", run_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "already holds a run; add --resume" in proc.stderr
    # --resume without --out picks the latest run of the pipeline and keeps every finished stage.
    proc = cli("run", tiny_pipeline, "--seed", "3", "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert all(s["resumed"] for n, s in manifest["stages"].items() if n != "report")


def test_unwritable_run_dir_is_a_clear_error(tiny_pipeline, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = cli("run", tiny_pipeline, "--out", blocker / "run", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {blocker / 'run'}: cannot write the run folder")


def test_failed_bench_still_reports(tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(bench={"timeout_s": 0.01}))
    proc = cli("run", path, "--out", tmp_path / "run", cwd=tmp_path)
    # A benchmark cell that fails is recorded; the run itself completes.
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "run" / "report" / "results.json").read_text())
    (art,) = results["artifacts"]
    assert art["status"] == "failed" and "timed out" in art["error"]
    assert results["verdict"]["fits"] is None and "missing" in results["verdict"]["summary"]
    assert any("timed out" in f for f in results["failures"])
    assert "timed out" in (tmp_path / "run" / "report" / "report.md").read_text()


@pytest.mark.slow
def test_kill_during_distill_then_resume(tmp_path):
    """SIGKILL while distilling; --resume keeps teacher and student, continues distillation, completes."""
    spec = tiny_pipeline_dict(distill={"epochs": 12, "batch_size": 32})
    path = write_pipeline(tmp_path / "p.yaml", spec)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "edgedistill", "run", str(path), "--out", str(run_dir)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        # Wait until distillation has finished at least one epoch (its training state is on disk).
        while time.time() < deadline and not list((run_dir / "distill").glob("train-state-*.pt")):
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["teacher"]["status"] == "completed"
    assert manifest["stages"]["distill"]["status"] == "running"
    teacher_sha = manifest["stages"]["teacher"]["outputs"]["weights"]["sha256"]

    proc = cli("run", path, "--out", run_dir, "--resume", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = manifest["stages"]
    assert stages["teacher"]["resumed"] and stages["student"]["resumed"]
    assert stages["teacher"]["outputs"]["weights"]["sha256"] == teacher_sha
    assert all(s["status"] == "completed" for s in stages.values())
    assert stages["distill"]["metrics"]["resumed_from_epoch"] >= 1
    assert "unchanged, kept from the earlier run" in proc.stderr


def test_debug_shows_traceback(tiny_pipeline, tmp_path):
    proc = cli("--debug", "run", tiny_pipeline, "--device", "nope", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    env_proc = cli("run", tiny_pipeline, "--device", "nope", cwd=tmp_path)
    assert env_proc.returncode == 2 and "Traceback" not in env_proc.stderr
    assert os.environ.get("EDGEDISTILL_DEBUG") is None
