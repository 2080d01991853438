"""Where a benchmark runs, one registry: this host (standing in for the device), the device over SSH, or the
device's ARM CPU under qemu. Config validation, the CLI, the bench stages and calibration ask this module, never
the address's spelling; a new transport is one module with a `Target` subclass and `@register_target`, found
through the entry-point group `edgedistill.targets` when it lives in another package.

A target says which addresses are its own (`claims`), checks one (`check`), whose figures it gives
(`evidence`: the device's, this host's as itself, this host's standing in for the device, or emulated ARM), how
many threads a run gets, how a run is described, and runs the shipped runner (`run`). An emulated target
measures accuracy and agreement on the device's kernels, not timing (`measures`).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import ClassVar

from edgedistill.bench.local import BenchFailed, host_cores, run_local
from edgedistill.errors import UserError, unknown_choice

PLUGIN_GROUP = "edgedistill.targets"


class Target:
    """One place a runner can run. Subclasses set `scheme` and `syntax` and implement `run`."""

    scheme: ClassVar[str]
    syntax: ClassVar[str]  # for messages: how its addresses are written
    measures: ClassVar[str] = "timing"  # or "fidelity": accuracy and agreement with this host, not latency

    def __init__(self, address: str):
        self.address = address

    @classmethod
    def claims(cls, address: str) -> bool:
        return address == cls.scheme or address.startswith(f"{cls.scheme}:")

    @classmethod
    def check(cls, address: str) -> None:
        """Raise ValueError (one line naming the bad part) for an address this target cannot use."""

    def evidence(self, device) -> str:
        return "host" if device.name == "host" else "stand-in"

    def threads(self, device, requested: int | None) -> int:
        """On the device: its cores. Here: as many as the device has, capped at this host's."""
        return requested or min(int(device.hardware.cores), len(host_cores()))

    def describe(self, device, threads: int) -> str:
        return f"{self.address} ({device.name}, {threads} thread{'s' * (threads > 1)})"

    def ssh_config(self, device, given: Path | None) -> Path | None:
        """The OpenSSH config a run may use; only an SSH target has one to refuse."""
        return given

    def run(self, device, model: Path, data: Path | None, *, threads: int, warmup_runs: int, warmup_s: float,
            runs: int, min_time_s: float, timeout_s: float, trust_new_host: bool = False,
            ssh_config: Path | None = None, seq_len: int | None = None) -> dict:
        """The runner's checked result for `model`; BenchFailed with one line when it cannot be had."""
        raise BenchFailed(f"target {self.address}: measures {self.measures}; it runs no timed benchmark")


TARGETS: dict[str, type[Target]] = {}


def register_target(cls: type[Target]) -> type[Target]:
    """Add a target class (a decorator); a scheme registered twice is an error, not a silent replacement."""
    if cls.scheme in TARGETS and TARGETS[cls.scheme] is not cls:
        raise ValueError(f"target scheme {cls.scheme!r} is registered twice ({TARGETS[cls.scheme].__module__}, "
                         f"{cls.__module__})")
    TARGETS[cls.scheme] = cls
    return cls


_plugins_loaded = False


def _load_plugins() -> None:
    """Import the modules other packages name in the entry-point group: importing one registers its targets."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for point in entry_points(group=PLUGIN_GROUP):
        try:
            point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is named in one line
            raise UserError(f"target plugin {point.name!r} ({point.value}): cannot be loaded "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None


def target_class(address: str) -> type[Target]:
    _load_plugins()
    for cls in TARGETS.values():
        if cls.claims(address):
            return cls
    raise ValueError(f"{ascii(address)}: expected auto, " + ", ".join(c.syntax for c in TARGETS.values()))


def check_target(address: object, measures: tuple[str, ...] = ("timing",)) -> object:
    """A pydantic-style validator: `address` is auto or an address a registered target claims, checks and
    measures `measures` with; a ValueError saying what is wrong otherwise."""
    if not isinstance(address, str) or address == "auto":
        return address
    cls = target_class(address)
    cls.check(address)
    if cls.measures not in measures:
        raise ValueError(f"{ascii(address)}: measures {cls.measures}, not {' or '.join(measures)}; this needs "
                         f"{', '.join(c.syntax for c in TARGETS.values() if c.measures in measures)}")
    return address


def get_target(address: str, device, measures: tuple[str, ...] = ("timing", "fidelity"),
               field: str = "target") -> Target:
    """The target of `address`, checked (a UserError naming `field` otherwise); 'auto' is the device profile's SSH
    address when it has one, else this host."""
    if address == "auto":
        conn = device.connection
        address = conn.address if conn and conn.transport == "ssh" and conn.address else "local"
    try:
        check_target(address, measures=measures)
    except ValueError as exc:
        raise UserError(f"{field} {exc}") from None
    return target_class(address)(address)


@register_target
class OnThisHost(Target):
    """The runner on this machine, pinned to as many cores as the device has: a stand-in for the device."""

    scheme, syntax = "local", "local"

    def describe(self, device, threads: int) -> str:
        return f"local (this host, {threads} thread{'s' * (threads > 1)}, standing in for {device.name})"

    def run(self, device, model, data, *, threads, warmup_runs, warmup_s, runs, min_time_s, timeout_s,
            trust_new_host=False, ssh_config=None, seq_len=None) -> dict:
        return run_local(model, data, threads=threads, warmup_runs=warmup_runs, warmup_s=warmup_s, runs=runs,
                         min_time_s=min_time_s, timeout_s=timeout_s, providers=list(device.execution_providers),
                         seq_len=seq_len)


@register_target
class OverSsh(Target):
    """The runner on the device itself, over the system OpenSSH client: the device's own figures."""

    scheme, syntax = "ssh", "ssh://[user@]host[:port]"

    @classmethod
    def claims(cls, address: str) -> bool:
        from edgedistill.bench.ssh import SCHEME

        return address.startswith(SCHEME)

    @classmethod
    def check(cls, address: str) -> None:
        from edgedistill.bench.ssh import check_ssh_address

        check_ssh_address(address)

    def evidence(self, device) -> str:
        return "device"

    def threads(self, device, requested: int | None) -> int:
        return requested or int(device.hardware.cores)

    def ssh_config(self, device, given: Path | None) -> Path | None:
        """Only a config the user names on the command line (--ssh-config). An ssh_config can run commands on
        this machine (ProxyCommand, LocalCommand, Match exec), and a device profile is data that may come from
        anywhere, so a profile's `connection.ssh_config` is never used on its own: a run that would need it
        stops with one line saying how to opt in."""
        named = device.connection.ssh_config if device.connection else None
        if given is not None or named is None:
            return given
        raise UserError(f"device {device.name!r}: connection.ssh_config names {str(named)!r}, an OpenSSH config, "
                        f"which can run commands on this machine; pass --ssh-config {shlex.quote(str(named))} to "
                        "use it")

    def run(self, device, model, data, *, threads, warmup_runs, warmup_s, runs, min_time_s, timeout_s,
            trust_new_host=False, ssh_config=None, seq_len=None) -> dict:
        from edgedistill.bench.ssh import SshTarget, run_ssh

        conn = device.connection
        ssh = SshTarget.parse(self.address, trust_new_host=trust_new_host or bool(conn and conn.trust_new_host),
                              ssh_config=self.ssh_config(device, ssh_config),
                              connect_timeout_s=conn.connect_timeout_s if conn else 10,
                              python=conn.python if conn else "python3")
        return run_ssh(ssh, model, data, threads=threads, cores=None, warmup_runs=warmup_runs, warmup_s=warmup_s,
                       runs=runs, min_time_s=min_time_s, timeout_s=timeout_s,
                       providers=list(device.execution_providers), seq_len=seq_len)


@register_target
class UnderQemu(Target):
    """The runner on the device's ARM CPU under qemu-user: accuracy and agreement on ARM kernels, not timing
    (emulation is hundreds of times slower than the device)."""

    scheme, syntax, measures = "emulated", "emulated[:cpu]", "fidelity"

    @classmethod
    def check(cls, address: str) -> None:
        from edgedistill.bench.emulated import CPUS

        cpu = address.partition(":")[2]
        if address != cls.scheme and cpu not in CPUS:
            raise ValueError(unknown_choice("emulated CPU", cpu, CPUS))

    def evidence(self, device) -> str:
        return "emulated"

    def cpu(self, device) -> str:
        """The ARM CPU: the address's, else the device profile's; one line when neither names one."""
        from edgedistill.bench.emulated import CPUS

        cpu = self.address.partition(":")[2] or device.hardware.arm_cpu
        if cpu is None:
            raise UserError(f"--target emulated: device {device.name!r} names no arm_cpu; name one: "
                            f"--target emulated:CPU (valid: {', '.join(CPUS)})")
        return cpu

    def describe(self, device, threads: int) -> str:
        return f"emulated {self.cpu(device)} (qemu, ARM kernels of {device.name}; not a latency)"
