"""Hostile SSH targets, profiles and devices (issue: hardening round 2), against real ssh and a real sshd."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from edgedistill.bench.local import BenchFailed, check_result
from edgedistill.bench.ssh import SshTarget
from edgedistill.config.device import device_files
from edgedistill.errors import UserError
from tests.conftest import cli, tiny_pipeline_dict, write_pipeline
from tests.sshd import NEEDS_SSHD, Device, bench

pytestmark = NEEDS_SSHD

INJECTIONS = ["ssh://-oProxyCommand=touch${IFS}pwned@x", "ssh://-V@x", "ssh://root@-oProxyCommand=x",
              "ssh://u@h;touch pwned", "ssh://u@h$(touch pwned)", "ssh://u@h:99999", "ssh://u@h\n-V"]


@pytest.mark.parametrize("address", INJECTIONS)
def test_option_smuggling_targets_are_refused_everywhere(address, tmp_path, ssh_models):
    with pytest.raises(UserError):
        SshTarget.parse(address)
    proc = cli("bench", ssh_models[0]["onnx"], "--target", address, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert "Traceback" not in proc.stderr
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(bench={"target": address}))
    proc = cli("validate", path, cwd=tmp_path)
    assert proc.returncode == 2 and "bench.target" in proc.stderr
    profile = yaml.safe_load(device_files()["raspberry-pi-4"].read_text())
    profile["connection"] = {"transport": "ssh", "address": address}
    (tmp_path / "box.yaml").write_text(yaml.safe_dump(profile))
    proc = cli("validate", tmp_path / "box.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "connection.address" in proc.stderr
    assert not list(tmp_path.rglob("pwned"))


def test_destination_comes_after_the_end_of_options():
    target = SshTarget.parse("ssh://pi@raspberrypi.local:2222")
    cmd = target.command("uname -a")
    assert cmd[-3:] == ["--", "pi@raspberrypi.local", "uname -a"]
    assert SshTarget.parse("ssh://[::1]:22").command("x")[-2] == "::1"


def test_profile_ssh_config_is_used_only_when_named_on_the_command_line(device, ssh_models, tmp_path):
    """A profile's ssh_config holding a ProxyCommand runs nothing unless the user passes it with --ssh-config."""
    marker = tmp_path / "proxy-ran"
    evil = tmp_path / "evil_config"
    evil.write_text(device.config.read_text() + f"  ProxyCommand sh -c 'touch {marker}; nc %h %p'\n")
    profile = yaml.safe_load(device_files()["raspberry-pi-4"].read_text())
    profile.update(name="evil-box", connection={"transport": "ssh", "address": device.address,
                                                "python": sys.executable, "ssh_config": str(evil)})
    (tmp_path / "evil-box.yaml").write_text(yaml.safe_dump(profile))
    proc = cli("bench", ssh_models[0]["onnx"], "--device", tmp_path / "evil-box.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "--ssh-config" in proc.stderr and "can run commands" in proc.stderr
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(device=str(tmp_path / "evil-box.yaml")))
    proc = cli("run", path, "--out", tmp_path / "run", cwd=tmp_path)
    assert proc.returncode == 2 and "--ssh-config" in proc.stderr
    assert not (tmp_path / "run" / "teacher").exists()  # refused before any work
    assert not marker.exists()
    proc = cli("bench", ssh_models[0]["onnx"], "--device", tmp_path / "evil-box.yaml", "--ssh-config", device.config,
               "--runs", "3", "--min-time-s", "0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()


def test_a_devices_folder_cannot_shadow_a_bundled_profile(tmp_path):
    profile = yaml.safe_load(device_files()["raspberry-pi-4"].read_text())
    profile["budgets"]["max_model_mb"] = 10_000
    (tmp_path / "raspberry-pi-4.yaml").write_text(yaml.safe_dump(profile))
    env = {"EDGEDISTILL_DEVICES": str(tmp_path)}
    proc = cli("run", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "defined more than once" in proc.stderr and str(tmp_path) in proc.stderr
    assert not (tmp_path / "runs").exists()
    proc = cli("validate", tmp_path / "raspberry-pi-4.yaml", cwd=tmp_path, env=env)
    assert proc.returncode == 0  # by its path, the file is what the user names
    proc = cli("devices", "show", "raspberry-pi-5", cwd=tmp_path, env=env)
    assert proc.returncode == 0  # other names are untouched


def test_a_device_that_floods_stdout_is_stopped(device, ssh_models, tmp_path):
    """`yes` in the place of the device's python prints forever: the host stops reading at the cap."""
    flood = tmp_path / "flood"
    flood.write_text("#!/bin/sh\nexec yes flood\n")
    flood.chmod(0o755)
    start = time.time()
    with pytest.raises(BenchFailed, match="printed more than 4 MB"):
        bench(device.target(python=str(flood)), ssh_models[0]["onnx"], ssh_models[1], timeout_s=120)
    assert time.time() - start < 60


def test_a_server_that_stalls_after_its_banner_is_given_up_quickly(monkeypatch, ssh_models):
    from edgedistill.bench import ssh

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    held = []

    def accept():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")  # then nothing, ever
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setattr(ssh, "SETUP_TIMEOUT_S", 3)
    target = SshTarget.parse(f"ssh://root@127.0.0.1:{port}", connect_timeout_s=2,
                             ssh_config=Path(os.devnull), trust_new_host=True)
    start = time.time()
    try:
        with pytest.raises(BenchFailed, match="timed out"):
            bench(target, ssh_models[0]["onnx"], ssh_models[1], timeout_s=600)
    finally:
        server.close()
    assert time.time() - start < 30  # the run's 600 s timeout did not apply to the setup step


def _answer(**change) -> dict:
    good = {"status": "ok", "latency_ms": {"p50": 1.0, "p90": 1.5, "p99": 2.0, "mean": 1.1, "std": 0.1, "min": 0.9,
                                           "max": 2.5, "count": 100},
            "peak_rss_mb": 40.0, "init_ms": 3.0, "accuracy": 0.9, "runtime": {}, "device": {}, "samples_ms": [1.0]}
    for key, value in change.items():
        if key.startswith("lat_"):
            good["latency_ms"][key[4:]] = value
        else:
            good[key] = value
    return good


@pytest.mark.parametrize("change", [{"accuracy": 7.5}, {"lat_p90": float("nan")}, {"lat_p50": -1.0},
                                    {"peak_rss_mb": "lots"}, {"lat_p99": 0.5}, {"samples_ms": [float("inf")]},
                                    {"device": "x"}, {"lat_count": 0}])
def test_unbelievable_runner_answers_are_refused(change):
    check_result(_answer())  # the good one passes
    with pytest.raises(BenchFailed, match="the runner's"):
        check_result(_answer(**change))


def test_a_device_answering_nonsense_is_refused_with_one_line(device, ssh_models, tmp_path):
    """A 'python' on the device that prints a well-formed result with accuracy 7.5: BenchFailed (the bench
    stage turns it into a failed cell)."""
    fake = tmp_path / "fake-python"
    answer = json.dumps(_answer(accuracy=7.5))
    fake.write_text(f"#!/bin/sh\necho '{answer}'\n")
    fake.chmod(0o755)
    with pytest.raises(BenchFailed, match=r"accuracy is 7.5"):
        bench(device.target(python=str(fake)), ssh_models[0]["onnx"], ssh_models[1])


def test_a_server_with_a_forced_command_is_one_line(ssh_models, tmp_path):
    """An sshd that answers every command with its own (ForceCommand): nothing is taken for a folder or a result."""
    forced = Device(tmp_path, extra_config="ForceCommand echo 'welcome; no shell here'\n")
    try:
        with pytest.raises(BenchFailed, match=r"mktemp -d answered 'welcome; no shell here', not a folder path"):
            bench(forced.target(), ssh_models[0]["onnx"], ssh_models[1])
    finally:
        forced.stop()
