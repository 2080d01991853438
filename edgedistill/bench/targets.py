"""Where a benchmark runs: this host (standing in for the device) or the device itself over SSH."""

from __future__ import annotations

import shlex
from pathlib import Path

from edgedistill.bench.local import host_cores, run_local
from edgedistill.bench.ssh import SshTarget, run_ssh


def resolve_target(target: str, device) -> str:
    """'auto' is the device profile's SSH address when it has one, else 'local'."""
    if target != "auto":
        return target
    conn = device.connection
    return conn.address if conn and conn.transport == "ssh" and conn.address else "local"


def ssh_config_for(target: str, device, given: Path | None) -> Path | None:
    """The OpenSSH config to use: only one the user names on the command line (--ssh-config).

    An ssh_config can run commands on this machine (ProxyCommand, LocalCommand, Match exec), and a device
    profile is data that may come from anywhere, so a profile's `connection.ssh_config` is never used on its
    own: a run that would need it stops with one line saying how to opt in.
    """
    from edgedistill.errors import UserError

    named = device.connection.ssh_config if device.connection else None
    if given is not None or named is None or not target.startswith("ssh://"):
        return given
    raise UserError(f"device {device.name!r}: connection.ssh_config names {str(named)!r}, an OpenSSH config, which "
                    f"can run commands on this machine; pass --ssh-config {shlex.quote(str(named))} to use it")


def bench_threads(target: str, device, requested: int | None) -> int:
    """On the device: its cores. Locally: as many as the device has, capped at this host's."""
    cores = int(device.hardware.cores)
    if requested:
        return requested
    return cores if target.startswith("ssh://") else min(cores, len(host_cores()))


def describe(target: str, device, threads: int) -> str:
    if target.startswith("ssh://"):
        return f"{target} ({device.name}, {threads} thread{'s' * (threads > 1)})"
    return f"local (this host, {threads} thread{'s' * (threads > 1)}, standing in for {device.name})"


def run_on(target: str, device, model: Path, data: Path | None, *, threads: int, warmup_runs: int, warmup_s: float,
           runs: int, min_time_s: float, timeout_s: float, trust_new_host: bool = False,
           ssh_config: Path | None = None, seq_len: int | None = None) -> dict:
    """The runner's result for `model` on `target`; BenchFailed with one line when it cannot be had.
    `seq_len`: tokens per input, for language models."""
    providers = list(device.execution_providers)
    if not target.startswith("ssh://"):
        return run_local(model, data, threads=threads, warmup_runs=warmup_runs, warmup_s=warmup_s, runs=runs,
                         min_time_s=min_time_s, timeout_s=timeout_s, providers=providers, seq_len=seq_len)
    conn = device.connection
    ssh = SshTarget.parse(target, trust_new_host=trust_new_host or bool(conn and conn.trust_new_host),
                          ssh_config=ssh_config_for(target, device, ssh_config),
                          connect_timeout_s=conn.connect_timeout_s if conn else 10,
                          python=conn.python if conn else "python3")
    return run_ssh(ssh, model, data, threads=threads, cores=None, warmup_runs=warmup_runs, warmup_s=warmup_s,
                   runs=runs, min_time_s=min_time_s, timeout_s=timeout_s, providers=providers, seq_len=seq_len)
