"""Fault injection: SIGKILL in each stage then --resume, and a device that drops off mid-benchmark."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from edgedistill.fileio import sha256_file
from tests.conftest import cli, tiny_pipeline_dict, write_pipeline
from tests.sshd import NEEDS_SSHD


def _manifest(run_dir):
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _runner_running(sshd: psutil.Process) -> bool:
    for child in sshd.children(recursive=True):
        try:
            if "runner.py" in " ".join(child.cmdline()):
                return True
        except psutil.Error:  # a short-lived process (mktemp, tar) already gone
            continue
    return False


def _spec(**overrides):
    # Stages long enough to be caught running (each takes seconds here: LiteRT conversion makes the export
    # stage ~7 s, and 2,000 runs let the 2 s minimum of each benchmark cell hold). The kill lands while the
    # stage's status is "running"; CI once finished an ONNX-only export (0.4 s) before the kill came.
    return tiny_pipeline_dict(teacher={"epochs": 15}, distill={"epochs": 15},
                              export={"formats": ["onnx", "tflite"], "precisions": ["fp32", "int8"]},
                              bench={"runs": 2000, "min_time_s": 2.0}, **overrides)


def _kill_when_running(path, run_dir, stage: str, resume: bool) -> dict:
    """Start `edgedistill run` (with --resume after the first), SIGKILL it and its children as soon as `stage`
    is running, and return the manifest's stages as the kill left them."""
    command = [sys.executable, "-m", "edgedistill", "run", str(path), "--out", str(run_dir)] + ["--resume"] * resume
    proc = subprocess.Popen(command, cwd=path.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            manifest = _manifest(run_dir)
            if manifest and manifest["stages"].get(stage, {}).get("status") == "running":
                break  # kill at once: "running" is written as the stage starts
            assert proc.poll() is None, f"the run ended before {stage} could be killed"
            time.sleep(0.02)
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return _manifest(run_dir)["stages"]


def _kept(stages: dict, finished: dict) -> None:
    """Every stage finished before a kill was not redone after it, and its artifacts hash the same."""
    for name, outputs in finished.items():
        assert stages[name]["status"] == "completed" and stages[name]["resumed"], name
        assert {k: v["sha256"] for k, v in stages[name]["outputs"].items()} == \
            {k: v["sha256"] for k, v in outputs.items()}, name


@pytest.mark.slow
def test_sigkill_in_each_stage_then_resume(tmp_path):
    """One run folder killed four times, in the teacher, distill, export and bench stages in turn (each kill in
    a run resumed from the last): every resumed run keeps the stages finished before, and the last completes."""
    path = write_pipeline(tmp_path / "p.yaml", _spec())
    run_dir = tmp_path / "run"
    finished: dict = {}
    for i, stage in enumerate(["teacher", "distill", "export", "bench"]):
        before = _kill_when_running(path, run_dir, stage, resume=i > 0)
        assert before[stage]["status"] == "running", stage
        _kept(before, finished)
        finished = {name: rec["outputs"] for name, rec in before.items() if rec["status"] == "completed"}

    proc = cli("run", path, "--out", run_dir, "--resume", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = _manifest(run_dir)["stages"]
    assert all(rec["status"] == "completed" for rec in after.values())
    _kept(after, finished)
    assert (run_dir / "report" / "report.html").is_file()


@pytest.mark.slow
@NEEDS_SSHD
def test_device_dropping_off_mid_benchmark_gives_a_failed_cell_and_a_report(tmp_path):
    from edgedistill.config.device import device_files
    from tests.sshd import Device

    (tmp_path / "sshd").mkdir()
    device = Device(tmp_path / "sshd")
    try:
        profile = yaml.safe_load(device_files()["raspberry-pi-4"].read_text())
        profile.update(name="flaky-box", connection={"transport": "ssh", "address": device.address,
                                                     "python": sys.executable, "ssh_config": str(device.config),
                                                     "connect_timeout_s": 3})
        (tmp_path / "flaky-box.yaml").write_text(yaml.safe_dump(profile))
        path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(
            device=str(tmp_path / "flaky-box.yaml"), bench={"runs": 300_000, "min_time_s": 20.0, "timeout_s": 120}))
        proc = subprocess.Popen([sys.executable, "-m", "edgedistill", "run", str(path), "--out", str(tmp_path / "run"),
                                 "--ssh-config", str(device.config)],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sshd = psutil.Process(device.process.pid)
        deadline = time.time() + 300
        while time.time() < deadline:  # until the runner is going on the "device"
            if _runner_running(sshd):
                break
            assert proc.poll() is None, "the run ended before the device could drop off"
            time.sleep(0.05)
        time.sleep(1.0)
        device.stop()  # the device goes away: no new connections...
        for p in psutil.process_iter(["cmdline"]):  # ...and the open session with its runner dies
            cmdline = p.info["cmdline"] or []
            if any(part.endswith("runner.py") for part in cmdline) and "--model" in cmdline:
                try:
                    p.kill()
                except psutil.Error:
                    pass
        out, err = proc.communicate(timeout=300)
    finally:
        if device.process.poll() is None:
            device.stop()
    assert proc.returncode == 0, err[-2000:]
    results = json.loads((tmp_path / "run" / "report" / "results.json").read_text())
    (art,) = results["artifacts"]
    assert art["status"] == "failed" and art["error"]
    assert results["failures"] and (tmp_path / "run" / "report" / "report.html").is_file()
    manifest = _manifest(tmp_path / "run")["stages"]
    assert manifest["distill"]["status"] == "completed"
    assert (tmp_path / "run" / "distill" / "best.safetensors").is_file()


def _private_mount_namespace() -> list[str] | None:
    """`unshare` arguments for a mount namespace of our own (root, or an unprivileged user namespace)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    for args in ([unshare, "-m"], [unshare, "-rm"]):
        probe = subprocess.run([*args, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
        if probe.returncode == 0:
            return args
    return None


@pytest.fixture
def namespace():
    args = _private_mount_namespace()
    if args is None:
        pytest.skip("needs a private mount namespace (unshare -m as root, or -rm) to mount a tmpfs")
    return args


@pytest.mark.slow
def test_full_disk_mid_run_is_one_line_keeps_finished_stages_and_resumes(tmp_path, namespace):
    """A real full file system (a 360 KiB tmpfs) under the run folder: the teacher fits (its two training states
    side by side at the last save, ~310 KiB in 4 KiB pages), a later stage does not."""
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict())
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    # The tmpfs lives only in the namespace, so what the full run left is copied out before it ends.
    script = (f"mount -t tmpfs -o size=360k tmpfs {disk} && "
              f"{sys.executable} -m edgedistill run {path} --out {disk}/run 2> {tmp_path}/err; "
              f"echo $? > {tmp_path}/rc; cp -a {disk}/run {kept}")
    subprocess.run([*namespace, "sh", "-c", script], cwd=tmp_path, check=True, timeout=600,
                   env={k: v for k, v in os.environ.items() if k != "EDGEDISTILL_DEBUG"})
    err = (tmp_path / "err").read_text()
    assert (tmp_path / "rc").read_text().strip() == "2", err[-2000:]
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "no space left on device" in line and "--resume" in line and "teacher" in line
    stages = _manifest(kept)["stages"]
    assert stages["teacher"]["status"] == "completed"
    assert not list(kept.rglob("*.tmp"))  # no half-written file is left taking space
    teacher = {k: v["sha256"] for k, v in stages["teacher"]["outputs"].items()}
    for out in stages["teacher"]["outputs"].values():  # the finished stage's files are whole
        assert sha256_file(kept / out["path"]) == out["sha256"]

    proc = cli("run", path, "--out", kept, "--resume", cwd=tmp_path, timeout=600)  # room again: it completes
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = _manifest(kept)["stages"]
    assert after["teacher"]["resumed"] and {k: v["sha256"] for k, v in after["teacher"]["outputs"].items()} == teacher
    assert all(rec["status"] == "completed" for rec in after.values())


@pytest.mark.slow
def test_read_only_run_folder_is_one_line(tmp_path, namespace):
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict())
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"mount -t tmpfs -o ro tmpfs {disk} && exec {sys.executable} -m edgedistill run {path} --out {disk}/run"
    proc = subprocess.run([*namespace, "sh", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {disk}/run: cannot write the run folder (Read-only file system)")
