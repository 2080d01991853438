"""Run folders under hostile or careless use: replaced inputs, two runs in one folder, names that are paths,
damaged manifests (issue: hardening round 2). Real files, real processes, the real engine."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgedistill.config.device import load_device
from edgedistill.config.pipeline import load_pipeline
from edgedistill.errors import UserError
from edgedistill.fileio import atomic_write_text
from edgedistill.pipeline.engine import Stage, StageResult, run_pipeline
from tests.conftest import cli, tiny_pipeline_dict, write_pipeline


def _counting_stage(calls: list, key: str) -> Stage:
    def run(spec, ctx):
        calls.append(key)
        path = ctx.stage_dir(key) / "out.txt"
        atomic_write_text(path, key)
        return StageResult(outputs={"out": path})

    return Stage(key, run, (key,))


def _npz(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.random((60, 8, 8)).astype(np.float32), y=np.repeat(np.arange(3), 20))
    return path


def test_resume_reruns_a_stage_whose_file_was_replaced_at_the_same_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the user's model module is, as when they run `edgedistill run` there
    data = _npz(tmp_path / "data.npz", seed=0)
    factory = tmp_path / "mymodels.py"
    factory.write_text("def build(**kw):\n    raise SystemExit('never called here')\n")
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(
        data={"kind": "npz", "path": str(data)}, student={"family": "mymodels:build"}))
    spec, device, calls = load_pipeline(path), load_device("host"), []
    stages = [_counting_stage(calls, "data"), _counting_stage(calls, "student"), _counting_stage(calls, "distill")]
    run_pipeline(spec, device, stages, tmp_path / "run")
    run_pipeline(spec, device, stages, tmp_path / "run", resume=True)
    assert calls == ["data", "student", "distill"]  # nothing changed: all kept
    _npz(data, seed=1)  # same path, same size, other contents
    run_pipeline(spec, device, stages, tmp_path / "run", resume=True)
    assert calls[3:] == ["data"]
    factory.write_text(factory.read_text() + "# edited\n")  # the user's model code changed
    run_pipeline(spec, device, stages, tmp_path / "run", resume=True)
    assert calls[4:] == ["student"]


def test_a_second_run_in_the_same_folder_is_refused_naming_the_first(tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(distill={"epochs": 6}))
    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "edgedistill", "run", str(path), "--out", str(run_dir)],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "manifest.json").is_file() and time.time() < deadline:
        time.sleep(0.05)
    second = cli("run", path, "--out", run_dir, "--resume", cwd=tmp_path)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2 and f"PID {first.pid}" in second.stderr, second.stderr
    assert len(second.stderr.splitlines()) == 1
    # The lock went with the first run: the folder can be resumed now.
    proc = cli("run", path, "--out", run_dir, "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("name", ["/elsewhere", "../../x", "..", ".", "a/../../b", "~root", " ", "-rf"])
def test_a_pipeline_name_becomes_one_folder_under_runs(name, tmp_path):
    from edgedistill.cli.run import _run_dir

    folder = _run_dir(name, None, resume=False, device="host")
    assert folder.parent.parent == Path("runs") and folder.parent.name not in ("", ".", "..")
    assert "/" not in folder.parent.name and not folder.parent.name.startswith((".", "-"))


def test_a_name_with_a_nul_byte_is_one_line(tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(name="a\x00b\x1b[2J"))
    proc = cli("validate", path, cwd=tmp_path)
    assert proc.returncode == 2 and "name" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert "\x1b" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("damage", ["{not json", json.dumps({"pipeline": "x", "stages": {"a": {"bogus": 1}}}),
                                    json.dumps({"pipeline": "x", "stages": {"a": {"status": "completed", "outputs": {
                                        "w": {"path": "../../../etc/passwd", "sha256": "0", "bytes": 1}}}}}),
                                    "[1, 2]"])
def test_a_damaged_manifest_is_one_line_on_resume_and_report(damage, tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(damage)
    (run_dir / "pipeline.resolved.yaml").write_text(path.read_text())
    for args in (["run", path, "--out", run_dir, "--resume"], ["report", run_dir]):
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2 and "manifest.json: damaged" in proc.stderr, proc.stderr[-1500:]
        assert "Traceback" not in proc.stderr
    assert (run_dir / "manifest.json").read_text() == damage  # the evidence is left as it was


def test_manifest_load_refuses_paths_outside_the_run(tmp_path):
    from edgedistill.pipeline.manifest import Manifest

    (tmp_path / "manifest.json").write_text(json.dumps({"pipeline": "x", "stages": {"a": {"outputs": {
        "w": {"path": "/etc/passwd", "sha256": "0", "bytes": 1}}}}}))
    with pytest.raises(UserError, match="outside the run folder"):
        Manifest.load(tmp_path)


def test_escape_codes_and_markup_from_files_never_reach_the_terminal_raw(tmp_path):
    """A profile whose name and processor carry terminal escapes, a pipeline named like rich markup: the run
    prints them escaped, finishes, and writes its report."""
    import yaml

    from edgedistill.config.device import device_files

    profile = yaml.safe_load(device_files()["raspberry-pi-4"].read_text())
    profile["name"] = "box\x1b]0;pwned\x07\x1b[2J"
    profile["hardware"]["processor"] = "\x1b[8mhidden\u202e"
    (tmp_path / "box.yaml").write_text(yaml.safe_dump(profile))
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(name="[/] [red]x", device=str(tmp_path / "box.yaml")))
    proc = cli("run", path, "--out", tmp_path / "run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = proc.stdout + proc.stderr
    assert "\x1b" not in printed and "\x07" not in printed and "\u202e" not in printed
    assert "\\x1b]0;pwned" in printed and "[/] [red]x" in printed
    assert (tmp_path / "run" / "report" / "report.html").is_file()
