"""SSH transport: the runner, the model and its test data copied to a private temp dir on the device.

Through the system OpenSSH client, so ~/.ssh/config, agents and jump hosts work as they do for the
user. Host keys are checked strictly unless `trust_new_host` (accept-new: a new key is recorded, a changed
one still refused). Every remote path is quoted; the temp dir is removed afterwards.
"""

from __future__ import annotations

import io
import re
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edgedistill.bench.local import RUNNER, BenchFailed, check_result, last_json_line, run_bounded

SCHEME = "ssh://"
# A user name and a host name, as OpenSSH is given them: neither may start with '-' (ssh would read it as
# an option) and neither holds a shell or ssh_config metacharacter. An IPv6 address goes in brackets.
_SSH_USER = r"[A-Za-z_][A-Za-z0-9._-]{0,31}"
_SSH_HOST = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]"
SSH_ADDRESS = re.compile(rf"^ssh://(?:(?P<user>{_SSH_USER})@)?(?P<host>{_SSH_HOST})(?::(?P<port>\d{{1,5}}))?/?$")
_PASSWORD = re.compile(r"^(ssh://[^@/:\s]*):[^@/\s]*@")


def refuse_password(address: object) -> object:
    """Refuse an SSH address that carries a password, showing it masked: addresses go into logs and reports."""
    if isinstance(address, str) and _PASSWORD.match(address):
        masked = _PASSWORD.sub(r"\1:***@", address)
        raise ValueError(f"{masked!r} holds a password; edgedistill connects with SSH keys only, so that no "
                         "password reaches a log or a report (ssh-copy-id installs a key)")
    return address


def check_ssh_address(address: object) -> object:
    """An ssh://[user@]host[:port] address whose parts cannot be read by ssh as options; a ValueError
    that says which part is wrong otherwise."""
    refuse_password(address)
    if not isinstance(address, str):
        return address
    shown = ascii(address)
    match = SSH_ADDRESS.match(address)
    if match is None:
        rest = address.removeprefix(SCHEME)
        if not address.startswith(SCHEME):
            why = "expected ssh://[user@]host[:port]"
        elif rest.startswith("-") or "@-" in rest:
            why = "a user or host may not start with '-' (ssh would take it for an option)"
        else:
            why = ("expected ssh://[user@]host[:port]: a user of letters, digits, '.', '_', '-' (not first), a host "
                   "name or address of the same, or [IPv6]")
        raise ValueError(f"{shown}: {why}")
    if match["port"] and not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"{shown}: port {match['port']} is outside 1..65535")
    return address


# Keep-alives: a device that stops answering mid-session is given up after 3 x 5 s, not after the whole timeout.
KEEPALIVE = ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
# The short steps (make the folder, clean up) get this long after connecting, whatever the run's timeout: a
# server that stalls after its banner (no keep-alives before login) costs this, not the whole run's timeout.
SETUP_TIMEOUT_S = 30


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
        from edgedistill.errors import UserError

        try:
            check_ssh_address(address)
        except ValueError as exc:
            raise UserError(f"target {exc}") from None
        match = SSH_ADDRESS.match(address)
        if match is None:  # auto or local: not an ssh target
            raise UserError(f"target {address!r}: expected ssh://[user@]host[:port]")
        port = match["port"]
        return cls(match["user"], match["host"].strip("[]"), int(port) if port else None, **options)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user + '@' if self.user else ''}{host}{':' + str(self.port) if self.port else ''}"

    def command(self, remote: str) -> list[str]:
        """The ssh command line running `remote` (a shell string, already quoted) on the device."""
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.connect_timeout_s)}",
               "-o", f"StrictHostKeyChecking={'accept-new' if self.trust_new_host else 'yes'}", *KEEPALIVE]
        if self.ssh_config:
            cmd += ["-F", str(self.ssh_config)]
        if self.port:
            cmd += ["-p", str(self.port)]
        # '--' before the destination: nothing after it is read as an option, by any OpenSSH version.
        return cmd + ["--", f"{self.user}@{self.host}" if self.user else self.host, remote]


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
    code, out, err = run_bounded(target.command(remote), timeout_s=timeout_s, stdin=stdin, what=target.address)
    if code == 255:  # ssh's own failure (connection, auth, host key), not the remote command's
        raise BenchFailed(_explain(target, err.decode(errors="replace"), code))
    if code != 0 and not out.strip():
        raise BenchFailed(f"{target.address}: remote command exited {code}: "
                          f"{' '.join(err.decode(errors='replace').split())[-300:]}")
    return out.decode(errors="replace")


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
    setup_s = min(timeout_s, target.connect_timeout_s + SETUP_TIMEOUT_S)
    answer = _ssh(target, "mktemp -d", timeout_s=setup_s).strip().splitlines()
    workdir = answer[-1] if answer else ""  # mode 0700: private
    if not workdir.startswith("/") or len(workdir) > 255 or not workdir.isprintable():
        raise BenchFailed(f"{target.address}: mktemp -d answered {workdir[:80]!r}, not a folder path")
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
            _ssh(target, f"rm -rf -- {q(workdir)}", timeout_s=setup_s)
        except BenchFailed:
            pass  # the device went away; nothing more to clean from here
    answer = last_json_line(out.encode())
    if answer is None:
        raise BenchFailed(f"{target.address}: the runner printed no result")
    try:
        result = check_result(answer)
    except BenchFailed as exc:
        raise BenchFailed(f"{target.address}: {exc}") from None
    result["target"] = target.address
    return result
