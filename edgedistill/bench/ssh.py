"""SSH transport: the runner, the model and its test data copied to a private temp dir on the device.

Through the system OpenSSH client, so ~/.ssh/config, agents and jump hosts work as they do for the
user. Host keys are checked strictly unless `trust_new_host` (accept-new: a new key is recorded, a changed
one still refused). Every remote path is quoted; the temp dir is removed afterwards.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edgedistill.bench.local import RUNNER, BenchFailed

ADDRESS = re.compile(r"^ssh://(?:(?P<user>[^@/:\s]+)@)?(?P<host>[^@/:\s]+)(?::(?P<port>\d+))?/?$")


@dataclass(frozen=True)
class SshTarget:
    user: str | None
    host: str
    port: int | None
    trust_new_host: bool = False
    ssh_config: Path | None = None
    connect_timeout_s: float = 10
    python: str = "python3"

    @classmethod
    def parse(cls, address: str, **options) -> "SshTarget":
        from edgedistill.config.device import refuse_password
        from edgedistill.errors import UserError

        try:
            refuse_password(address)
        except ValueError as exc:
            raise UserError(f"target {exc}") from None
        match = ADDRESS.match(address)
        if not match:
            raise UserError(f"target {address!r}: expected ssh://[user@]host[:port]")
        port = match["port"]
        return cls(match["user"], match["host"], int(port) if port else None, **options)

    @property
    def address(self) -> str:
        return f"ssh://{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"

    def command(self, remote: str) -> list[str]:
        """The ssh command line running `remote` (a shell string, already quoted) on the device."""
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.connect_timeout_s)}",
               "-o", f"StrictHostKeyChecking={'accept-new' if self.trust_new_host else 'yes'}"]
        if self.ssh_config:
            cmd += ["-F", str(self.ssh_config)]
        if self.port:
            cmd += ["-p", str(self.port)]
        return cmd + [f"{self.user}@{self.host}" if self.user else self.host, "--", remote]


def _explain(target: SshTarget, stderr: str, code: int) -> str:
    """One line for the ways an SSH session fails."""
    text = " ".join(stderr.split())
    for pattern, why in (("Connection refused", "connection refused (is sshd running, is the port right?)"),
                         ("Host key verification failed", "unknown or changed host key; add it to known_hosts, or "
                          "pass --trust-new-host to accept a new one"),
                         ("Permission denied", "authentication failed (check the user and the key)"),
                         ("timed out", "connection timed out"),
                         ("Could not resolve hostname", "unknown host name"),
                         ("No route to host", "no route to host")):
        if pattern in text:
            return f"{target.address}: {why}"
    return f"{target.address}: ssh exited {code}: {text[-300:] or 'no message'}"


def _ssh(target: SshTarget, remote: str, *, timeout_s: float, stdin: bytes | None = None) -> str:
    try:
        proc = subprocess.run(target.command(remote), input=stdin, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BenchFailed(f"{target.address}: timed out after {timeout_s:g} s") from None
    if proc.returncode == 255:  # ssh's own failure (connection, auth, host key), not the remote command's
        raise BenchFailed(_explain(target, proc.stderr.decode(errors="replace"), proc.returncode))
    if proc.returncode != 0 and not proc.stdout.strip():
        raise BenchFailed(f"{target.address}: remote command exited {proc.returncode}: "
                          f"{' '.join(proc.stderr.decode(errors='replace').split())[-300:]}")
    return proc.stdout.decode(errors="replace")


def _bundle(files: dict[str, Path]) -> bytes:
    """A tar of `files` under their given names: one round trip, names kept exactly (spaces, ';' and all)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, path in files.items():
            tar.add(str(path), arcname=name)
    return buffer.getvalue()


def run_ssh(target: SshTarget, model: Path, data: Path | None, *, threads: int, cores: list[int] | None,
            warmup_runs: int, warmup_s: float, runs: int, min_time_s: float, timeout_s: float,
            providers: list[str] = ("CPUExecutionProvider",), seq_len: int | None = None) -> dict:
    """Copy, run and clean up on the device; the runner's JSON result, or BenchFailed with one line."""
    workdir = _ssh(target, "mktemp -d", timeout_s=timeout_s).strip().splitlines()[-1]  # mode 0700: private
    q = shlex.quote
    try:
        files = {"runner.py": RUNNER, model.name: model}
        if data is not None:
            files[data.name] = data
        _ssh(target, f"tar -x -C {q(workdir)}", timeout_s=timeout_s, stdin=_bundle(files))
        args = [target.python, f"{workdir}/runner.py", "--model", f"{workdir}/{model.name}", "--threads", str(threads),
                "--warmup-runs", str(warmup_runs), "--warmup-s", str(warmup_s), "--runs", str(runs),
                "--min-time-s", str(min_time_s), "--providers", ",".join(providers)]
        if data is not None:
            args += ["--data", f"{workdir}/{data.name}"]
        if cores:
            args += ["--cores", ",".join(map(str, cores))]
        if seq_len is not None:
            args += ["--seq-len", str(seq_len)]
        out = _ssh(target, " ".join(q(a) for a in args), timeout_s=timeout_s)
    finally:
        try:
            _ssh(target, f"rm -rf -- {q(workdir)}", timeout_s=30)
        except BenchFailed:
            pass  # the device went away; nothing more to clean from here
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise BenchFailed(f"{target.address}: the runner printed no result") from None
    if result.get("status") != "ok":
        raise BenchFailed(f"{target.address}: runner exited {result.get('exit_code')}: {result.get('error')}")
    result["target"] = target.address
    return result
