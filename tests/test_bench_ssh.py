"""Benchmarks over SSH against a real sshd on 127.0.0.1 (Debian's openssh-server, started here)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from edgedistill.bench.local import BenchFailed
from edgedistill.bench.ssh import SshTarget
from tests.sshd import NEEDS_SSHD, bench, free_port

pytestmark = NEEDS_SSHD


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_bench_over_ssh(device, ssh_models, fmt):
    paths, data = ssh_models
    if fmt not in paths:
        pytest.skip("tflite extra not installed")
    result = bench(device.target(), paths[fmt], data)
    assert result["status"] == "ok" and result["target"] == device.address
    assert result["latency_ms"]["count"] >= 10 and result["samples"] == 40 and 0 <= result["accuracy"] <= 1
    assert result["device"]["hostname"] and result["device"]["cpu_count"] >= 1


def test_remote_temp_dir_is_removed(device, ssh_models):
    before = set(Path("/tmp").glob("tmp.*"))
    bench(device.target(), ssh_models[0]["onnx"], ssh_models[1])
    assert set(Path("/tmp").glob("tmp.*")) - before == set()


def test_file_names_with_spaces_and_semicolons(device, ssh_models, tmp_path):
    # Were the name run by a shell, `touch` would create the marker in the remote session's home.
    marker = Path.home() / f"PWNED-{device.port}"
    evil = tmp_path / f"my model; touch {marker.name}.onnx"
    shutil.copy(ssh_models[0]["onnx"], evil)
    data = tmp_path / "test data; ls.npz"
    shutil.copy(ssh_models[1], data)
    result = bench(device.target(), evil, data)
    assert result["status"] == "ok" and result["model"] == evil.name
    assert not marker.exists()


def test_refused_port(ssh_models):
    target = SshTarget.parse(f"ssh://root@127.0.0.1:{free_port()}", python=sys.executable, connect_timeout_s=5)
    with pytest.raises(BenchFailed, match=r"ssh://root@127.0.0.1:\d+: connection refused"):
        bench(target, ssh_models[0]["onnx"], ssh_models[1])


def test_wrong_key(device, ssh_models):
    target = device.target(ssh_config=device.ssh_config("other_key", "known_hosts"))
    with pytest.raises(BenchFailed, match="authentication failed"):
        bench(target, ssh_models[0]["onnx"], ssh_models[1])


def test_unknown_host_key_is_refused_unless_trusted(device, ssh_models):
    config = device.ssh_config("client_key", "empty_known_hosts")
    with pytest.raises(BenchFailed, match="unknown or changed host key.*--trust-new-host"):
        bench(device.target(ssh_config=config), ssh_models[0]["onnx"], ssh_models[1])
    assert (device.root / "empty_known_hosts").read_text() == ""  # nothing was accepted silently
    result = bench(device.target(ssh_config=config, trust_new_host=True), ssh_models[0]["onnx"], ssh_models[1])
    assert result["status"] == "ok"
    assert "127.0.0.1" in (device.root / "empty_known_hosts").read_text()  # recorded, only when asked


def test_slow_device_times_out(device, ssh_models):
    with pytest.raises(BenchFailed, match=r"timed out after 2 s"):
        # A million timed runs take far longer than the 2 s allowed.
        bench(device.target(), ssh_models[0]["onnx"], ssh_models[1], timeout_s=2, runs=1_000_000)


def test_runtime_missing_on_the_device(device, ssh_models):
    with pytest.raises(BenchFailed, match="runner exited 3: numpy is not installed on this device"):
        bench(device.target(python="/usr/bin/python3"), ssh_models[0]["onnx"], ssh_models[1])


def test_pipeline_benches_over_ssh_and_reports_device_info(device, tmp_path):
    import json

    # A device profile whose connection is the sshd above: `target: auto` picks it up.
    import yaml

    from edgedistill.config.device import device_files
    from tests.conftest import cli, tiny_pipeline_dict, write_pipeline

    profile = yaml.safe_load(device_files()["raspberry-pi-4"].read_text())
    profile["name"] = "ssh-box"
    profile["connection"] = {"transport": "ssh", "address": device.address, "python": sys.executable,
                             "ssh_config": str(device.config)}
    (tmp_path / "ssh-box.yaml").write_text(yaml.safe_dump(profile))
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(device=str(tmp_path / "ssh-box.yaml")))
    proc = cli("run", path, "--out", tmp_path / "run", "--ssh-config", device.config, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "run" / "report" / "results.json").read_text())
    (art,) = results["artifacts"]
    assert art["status"] == "ok" and art["target"].startswith(device.address)
    assert results["environment"]["device_info"]["hostname"]
    html = (tmp_path / "run" / "report" / "report.html").read_text()
    assert device.address in html and "measured on" in html


def test_no_secrets_in_logs_or_reports(device, tmp_path):
    """A whole run over SSH with secrets in the environment: no byte of them, or of the private key, is
    written to the run folder or printed."""
    import yaml

    from edgedistill.config.device import device_files
    from tests.conftest import cli, tiny_pipeline_dict, write_pipeline

    profile = yaml.safe_load(device_files()["raspberry-pi-4"].read_text())
    profile.update(name="ssh-box", connection={"transport": "ssh", "address": device.address,
                                               "python": sys.executable, "ssh_config": str(device.config)})
    (tmp_path / "ssh-box.yaml").write_text(yaml.safe_dump(profile))
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(device=str(tmp_path / "ssh-box.yaml"),
                                                                 export={"formats": ["onnx"]}))
    secrets = {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY",
               "HF_TOKEN": "hf_sEcReTtOkEnThatMustNeverLeak0123", "SSH_AUTH_SOCK": "/tmp/agent-s3cr3t.sock"}
    proc = cli("run", path, "--out", tmp_path / "run", "--ssh-config", device.config, cwd=tmp_path, env=secrets)
    assert proc.returncode == 0, proc.stderr[-2000:]
    key_lines = [line for line in (device.root / "client_key").read_text().splitlines() if "PRIVATE KEY" not in line]
    needles = [s.encode() for s in secrets.values()] + [line.encode() for line in key_lines if len(line) > 20]
    printed = (proc.stdout + proc.stderr).encode()
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.name == "report.html" for p in files)
    for needle in needles:
        assert needle not in printed
        for file in files:
            assert needle not in file.read_bytes(), (file, needle[:12])
