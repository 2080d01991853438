"""A real sshd for the SSH transport tests: Debian's openssh-server on 127.0.0.1 with keys made here, and the
helpers the tests share. The fixtures that start it are in conftest.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from edgedistill.bench.ssh import SshTarget, run_ssh
from tests.optional import needs

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
NEEDS_SSHD = needs("sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


class Device:
    """An sshd on a high port with its own host key, and an ssh_config for the client side."""

    def __init__(self, root: Path, extra_config: str = ""):
        self.root = root
        self.port = free_port()
        for name in ("host_key", "client_key", "other_key"):
            keygen(root / name)
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


def bench(target, model, data, timeout_s=120, runs=10):
    return run_ssh(target, model, data, threads=1, cores=None, warmup_runs=2, warmup_s=0, runs=runs,
                   min_time_s=0.0, timeout_s=timeout_s)
