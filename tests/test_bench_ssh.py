"""Benchmarks over SSH against a real sshd on 127.0.0.1 (Debian's openssh-server, started here)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgedistill.bench.local import BenchFailed
from edgedistill.bench.ssh import SshTarget, run_ssh

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(not (os.path.exists(SSHD) and os.geteuid() == 0 and shutil.which("ssh")),
                                reason="needs openssh-server and root (.ci/run installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


class Device:
    """An sshd on a high port with its own host key, and an ssh_config for the client side."""

    def __init__(self, root: Path, extra_config: str = ""):
        self.root = root
        self.port = _free_port()
        for name in ("host_key", "client_key", "other_key"):
            _keygen(root / name)
        shutil.copy(root / "client_key.pub", root / "authorized_keys")
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"PidFile {root / 'sshd.pid'}\nLogLevel ERROR\n{extra_config}")
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.05)
        host_pub = (root / "host_key.pub").read_text().split()
        (root / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (root / "empty_known_hosts").write_text("")
        self.config = self.ssh_config("client_key", "known_hosts")

    def ssh_config(self, key: str, known_hosts: str) -> Path:
        path = self.root / f"ssh_config-{key}-{known_hosts}"
        path.write_text(f"Host *\n  IdentityFile {self.root / key}\n  IdentitiesOnly yes\n"
                        f"  UserKnownHostsFile {self.root / known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
                        "  LogLevel ERROR\n")
        return path

    @property
    def address(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def target(self, **kw) -> SshTarget:
        options = {"ssh_config": self.config, "python": sys.executable, "connect_timeout_s": 5, **kw}
        return SshTarget.parse(self.address, **options)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    dev = Device(tmp_path_factory.mktemp("sshd"))
    yield dev
    dev.stop()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A real exported student (ONNX and, with the tflite extra, TFLite) and real digits as test data."""
    from sklearn.datasets import load_digits

    from edgedistill.export.converters import CONVERTERS
    from edgedistill.models import build_model

    folder = tmp_path_factory.mktemp("ssh-models")
    net = build_model("mobilenetv2", width=0.125, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8)).eval()
    out = {"onnx": CONVERTERS["onnx"].export(net, (1, 1, 8, 8), folder / "m.onnx", opset=17, metadata={})}
    try:
        out["tflite"] = CONVERTERS["tflite"].export(net, (1, 1, 8, 8), folder / "m.tflite", opset=17, metadata={})
    except Exception:  # noqa: BLE001 - without the tflite extra only ONNX is benched
        pass
    digits = load_digits()
    np.savez(folder / "test.npz", x=(digits.images[:40, None] / 16).astype(np.float32), y=digits.target[:40])
    return out, folder / "test.npz"


def _bench(target, model, data, timeout_s=120, runs=10):
    return run_ssh(target, model, data, threads=1, cores=None, warmup_runs=2, warmup_s=0, runs=runs,
                   min_time_s=0.0, timeout_s=timeout_s)


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_bench_over_ssh(device, models, fmt):
    paths, data = models
    if fmt not in paths:
        pytest.skip("tflite extra not installed")
    result = _bench(device.target(), paths[fmt], data)
    assert result["status"] == "ok" and result["target"] == device.address
    assert result["latency_ms"]["count"] >= 10 and result["samples"] == 40 and 0 <= result["accuracy"] <= 1
    assert result["device"]["hostname"] and result["device"]["cpu_count"] >= 1


def test_remote_temp_dir_is_removed(device, models):
    before = set(Path("/tmp").glob("tmp.*"))
    _bench(device.target(), models[0]["onnx"], models[1])
    assert set(Path("/tmp").glob("tmp.*")) - before == set()


def test_file_names_with_spaces_and_semicolons(device, models, tmp_path):
    # Were the name run by a shell, `touch` would create the marker in the remote session's home.
    marker = Path.home() / f"PWNED-{device.port}"
    evil = tmp_path / f"my model; touch {marker.name}.onnx"
    shutil.copy(models[0]["onnx"], evil)
    data = tmp_path / "test data; ls.npz"
    shutil.copy(models[1], data)
    result = _bench(device.target(), evil, data)
    assert result["status"] == "ok" and result["model"] == evil.name
    assert not marker.exists()


def test_refused_port(models):
    target = SshTarget.parse(f"ssh://root@127.0.0.1:{_free_port()}", python=sys.executable, connect_timeout_s=5)
    with pytest.raises(BenchFailed, match=r"ssh://root@127.0.0.1:\d+: connection refused"):
        _bench(target, models[0]["onnx"], models[1])


def test_wrong_key(device, models):
    target = device.target(ssh_config=device.ssh_config("other_key", "known_hosts"))
    with pytest.raises(BenchFailed, match="authentication failed"):
        _bench(target, models[0]["onnx"], models[1])


def test_unknown_host_key_is_refused_unless_trusted(device, models):
    config = device.ssh_config("client_key", "empty_known_hosts")
    with pytest.raises(BenchFailed, match="unknown or changed host key.*--trust-new-host"):
        _bench(device.target(ssh_config=config), models[0]["onnx"], models[1])
    assert (device.root / "empty_known_hosts").read_text() == ""  # nothing was accepted silently
    result = _bench(device.target(ssh_config=config, trust_new_host=True), models[0]["onnx"], models[1])
    assert result["status"] == "ok"
    assert "127.0.0.1" in (device.root / "empty_known_hosts").read_text()  # recorded, only when asked


def test_slow_device_times_out(device, models):
    with pytest.raises(BenchFailed, match=r"timed out after 2 s"):
        # A million timed runs take far longer than the 2 s allowed.
        _bench(device.target(), models[0]["onnx"], models[1], timeout_s=2, runs=1_000_000)


def test_runtime_missing_on_the_device(device, models):
    with pytest.raises(BenchFailed, match="runner exited 3: numpy is not installed on this device"):
        _bench(device.target(python="/usr/bin/python3"), models[0]["onnx"], models[1])


def test_pipeline_benches_over_ssh_and_reports_device_info(device, tmp_path):
    import json

    from tests.conftest import cli, tiny_pipeline_dict, write_pipeline

    # A device profile whose connection is the sshd above: `target: auto` picks it up.
    import yaml

    from edgedistill.config.device import device_files

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
