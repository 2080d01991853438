"""Emulated ARM target: the shipped runner under qemu-user, in an arm64 Debian userland holding the aarch64
wheels of numpy, onnxruntime and ai-edge-litert. It runs an artifact on the ARM kernels of its runtime (NEON,
the ARM int8 paths), so accuracy and agreement with PyTorch are those of an ARM device; its timings are those
of an emulator (hundreds of times slower) and say nothing about any device.

The userland is built once (`edgedistill devices emulate --setup`, or on first use) under the cache folder:
debootstrap's first stage for the .debs, `dpkg -x` to unpack them (no chroot, no root-only second stage), pip
for the wheels at the host's own versions. Two traps, both checked here: onnxruntime crashes on import unless
the userland's /proc/cpuinfo describes an ARM CPU matching QEMU_CPU; and qemu's default CPU, `max`, gives
wrong TFLite int8 results, so a named CPU is always set.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgedistill.errors import UserError, unknown_choice
from edgedistill.fileio import atomic_write_text, cache_root, sha256_json

DEBIAN_SUITE = "bookworm"
USERLAND_PYTHON = "3.11"  # bookworm's python3
RUNTIME_PACKAGES = ("numpy", "onnxruntime", "ai-edge-litert")
# pip's platform tags for the aarch64 wheels: ai-edge-litert publishes manylinux_2_27, onnxruntime 2_28.
AARCH64_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64",
                     "manylinux_2_28_aarch64")
SETUP_TIMEOUT_S = 1800


@dataclass(frozen=True)
class ArmCpu:
    """What /proc/cpuinfo says for one core of this CPU (the Arm technical reference manuals' MIDR fields)."""

    part: str
    variant: str
    revision: str
    features: str

    def cpuinfo(self, cores: int = 4) -> str:
        core = ("BogoMIPS\t: 108.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
                "CPU variant\t: {v}\nCPU part\t: {p}\nCPU revision\t: {r}\n").format(
            f=self.features, v=self.variant, p=self.part, r=self.revision)
        return "".join(f"processor\t: {i}\n{core}\n" for i in range(cores))


_V8_0 = "fp asimd evtstrm crc32 cpuid"
_V8_2 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
# The CPUs both qemu-user (7.2, Debian bookworm) and device profiles name.
CPUS: dict[str, ArmCpu] = {
    "cortex-a53": ArmCpu("0xd03", "0x0", "4", _V8_0),  # Pi 3, many phones' little cores
    "cortex-a57": ArmCpu("0xd07", "0x1", "1", _V8_0),  # Jetson Nano
    "cortex-a72": ArmCpu("0xd08", "0x0", "3", _V8_0),  # Raspberry Pi 4
    "cortex-a76": ArmCpu("0xd0b", "0x4", "1", _V8_2),  # Raspberry Pi 5, phones' big cores
    "neoverse-n1": ArmCpu("0xd0c", "0x3", "1", _V8_2 + " ssbs"),
}


def check_cpu(name: str) -> str:
    if name not in CPUS:
        raise UserError(unknown_choice("emulated CPU", name, CPUS))
    return name


def _host_versions() -> dict[str, str | None]:
    """The runtime packages at the host's versions, so that the ARM run differs from the host's in kernels only."""
    versions = {}
    for package in RUNTIME_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None  # the newest the registry has
    return versions


def userland_dir() -> Path:
    key = sha256_json({"suite": DEBIAN_SUITE, "python": USERLAND_PYTHON, "packages": _host_versions()})[:12]
    return cache_root() / "emulation" / f"arm64-{DEBIAN_SUITE}-{key}"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"the emulated ARM target needs {name}: apt-get install {package}")
    return path


def _debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (EDGEDISTILL_DEBIAN_MIRROR overrides it)."""
    if os.environ.get("EDGEDISTILL_DEBIAN_MIRROR"):
        return os.environ["EDGEDISTILL_DEBIAN_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        try:
            lines = source.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split()
            urls = [w for w in words if w.startswith(("http://", "https://"))]
            if urls and (words[0] in ("deb", "URIs:")) and not urls[0].rstrip("/").endswith("-security"):
                return urls[0]
    return "http://deb.debian.org/debian"


def _run(cmd: list[str], what: str, env: dict | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SETUP_TIMEOUT_S, env=env)
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).split()[-40:])
        raise UserError(f"emulated ARM setup: {what} failed (exit {proc.returncode}): {tail}")


def _pip_platform_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", USERLAND_PYTHON, "--implementation", "cp"]
    for platform in AARCH64_PLATFORMS:
        args += ["--platform", platform]
    return args


def setup(console=None, force: bool = False) -> Path:
    """The arm64 userland, built now if it is not there yet; its folder."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edgedistill.terminal import SafeConsole

    root = userland_dir()
    if (root / "edgedistill-userland.json").is_file() and not force:
        return root
    qemu, debootstrap = _tool("qemu-aarch64-static", "qemu-user-static"), _tool("debootstrap", "debootstrap")
    _tool("dpkg", "dpkg")
    if os.geteuid() != 0 and shutil.which("fakeroot") is None:
        raise UserError("emulated ARM setup: debootstrap needs root, or fakeroot (apt-get install fakeroot)")
    root.parent.mkdir(parents=True, exist_ok=True)
    versions = _host_versions()
    steps = ["Debian arm64 packages (debootstrap)", "unpacking them", "aarch64 wheels (pip)", "checking it runs"]
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two setups at once: the second waits and finds it done
        if (root / "edgedistill-userland.json").is_file() and not force:
            return root
        work = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            with Progress(TextColumn("  emulated ARM setup: {task.description}"), BarColumn(), TimeElapsedColumn(),
                          console=console or SafeConsole(stderr=True)) as progress:
                task = progress.add_task(steps[0], total=len(steps))
                fake = [] if os.geteuid() == 0 else ["fakeroot"]
                _run(fake + [debootstrap, "--arch=arm64", "--foreign", "--variant=minbase", "--include=python3",
                             DEBIAN_SUITE, str(work / "root"), _debian_mirror()], "debootstrap")
                progress.update(task, advance=1, description=steps[1])
                archives = work / "root" / "var" / "cache" / "apt" / "archives"
                for deb in sorted(archives.glob("*.deb")):
                    _run(["dpkg", "-x", str(deb), str(work / "root")], f"dpkg -x {deb.name}")
                    deb.unlink()
                progress.update(task, advance=1, description=steps[2])
                wanted = [f"{p}=={v}" if v else p for p, v in versions.items()]
                pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
                _run(pip + ["download", *_pip_platform_args(), "-d", str(work / "wheels"), *wanted], "pip download")
                site = work / "root" / "usr" / "local" / "lib" / f"python{USERLAND_PYTHON}" / "dist-packages"
                _run(pip + ["install", "--no-index", "--find-links", str(work / "wheels"), *_pip_platform_args(),
                            "--target", str(site), *wanted], "pip install")
                shutil.rmtree(work / "wheels")
                progress.update(task, advance=1, description=steps[3])
                (work / "root" / "proc").mkdir(exist_ok=True)
                atomic_write_text(work / "root" / "proc" / "cpuinfo", CPUS["cortex-a72"].cpuinfo())
                check = ("import numpy, onnxruntime; from ai_edge_litert.interpreter import Interpreter; "
                         "print(numpy.__version__, onnxruntime.__version__)")
                _run([qemu, "-L", str(work / "root"), str(work / "root" / "usr" / "bin" / f"python{USERLAND_PYTHON}"),
                      "-c", check], "importing the runtimes under qemu", env={**os.environ, "QEMU_CPU": "cortex-a72"})
                progress.update(task, advance=1, description="ready")
            atomic_write_text(work / "root" / "edgedistill-userland.json", json.dumps(
                {"suite": DEBIAN_SUITE, "python": USERLAND_PYTHON, "packages": versions, "built": time.time()}))
            if root.exists():
                shutil.rmtree(root)
            os.replace(work / "root", root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return root


def _cpuinfo_is(root: Path, cpu: str) -> bool:
    path = root / "proc" / "cpuinfo"
    return path.is_file() and path.read_text() == CPUS[cpu].cpuinfo()


@functools.cache  # asked once per process, not once per emulated run
def qemu_version() -> str | None:
    try:
        out = subprocess.run([_tool("qemu-aarch64-static", "qemu-user-static"), "--version"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    words = out.split()  # "qemu-aarch64 version 7.2.22 (Debian ...)"
    return words[2] if len(words) > 2 else None


def available() -> bool:
    """Whether this machine can emulate ARM (qemu-user and debootstrap on PATH)."""
    return shutil.which("qemu-aarch64-static") is not None and shutil.which("debootstrap") is not None


def run_python(args: list[str], *, cpu: str, timeout_s: float, console=None) -> tuple[int, bytes, bytes]:
    """The userland's python3 under qemu on `cpu`, with `args`; (exit code, stdout, stderr tail). The userland's
    /proc/cpuinfo is set to `cpu`'s for the run: runs on the same CPU share the userland at once (a shared lock),
    runs on different CPUs take turns (each lasts seconds)."""
    from edgedistill.bench.local import run_bounded

    root = setup(console)
    cmd = [_tool("qemu-aarch64-static", "qemu-user-static"), "-cpu", check_cpu(cpu), "-L", str(root),
           str(root / "usr" / "bin" / f"python{USERLAND_PYTHON}"), *args]
    with open(root.parent / f".{root.name}.cpu.lock", "w") as lock:
        while True:
            fcntl.flock(lock, fcntl.LOCK_SH)
            if _cpuinfo_is(root, cpu):
                break
            # Another CPU's cpuinfo: wait for its runs to end, write ours, and check again under the shared lock
            # (turning the lock back into a shared one lets another CPU's run in between).
            fcntl.flock(lock, fcntl.LOCK_EX)
            atomic_write_text(root / "proc" / "cpuinfo", CPUS[cpu].cpuinfo())
        return run_bounded(cmd, timeout_s=timeout_s, what="emulated runner")


def run_emulated(model: Path, data: Path | None, *, cpu: str, runner_args: list[str], timeout_s: float,
                 save_outputs: Path | None = None, console=None) -> dict:
    """The runner's checked result for `model` on the emulated `cpu`; BenchFailed with one line otherwise."""
    from edgedistill.bench.local import RUNNER, BenchFailed, check_result, last_json_line

    args = [str(RUNNER.resolve()), "--model", str(model.resolve()), *runner_args]
    if data is not None:
        args += ["--data", str(data.resolve())]
    if save_outputs is not None:
        args += ["--save-outputs", str(save_outputs.resolve())]
    code, out, err = run_python(args, cpu=cpu, timeout_s=timeout_s, console=console)
    answer = last_json_line(out)
    if answer is None:
        tail = " ".join(err.decode(errors="replace").split()[-40:])
        raise BenchFailed(f"emulated runner exited {code} without a result: {tail}")
    result = check_result(answer)
    result["target"] = f"emulated:{cpu}"
    result["emulated"] = {"cpu": cpu, "qemu": qemu_version(), "userland": userland_dir().name,
                          "timing": "emulated: not a device latency"}
    return result


# The emulated run checks numbers, not speed: one timed run, and at most this many test samples (a tiny model
# takes ~0.3 ms a sample under emulation, a 224x224 one hundreds of times that).
FIDELITY_SAMPLES = 512
# Multiply-adds one emulated run may spend: qemu runs a model about two orders of magnitude slower than the host.
# A 124 M-MAC model on 512 samples (6.3e10) ran past the 600 s timeout on a loaded 2-core host (ELPV, 2026-12-05).
EMULATED_MACS = 2e10


def fidelity_samples(macs_per_sample: float) -> int:
    """How many samples one emulated run may take for a model of `macs_per_sample`: FIDELITY_SAMPLES for small
    models, fewer (never under 32) as the model grows."""
    return int(min(FIDELITY_SAMPLES, max(32, EMULATED_MACS // max(macs_per_sample, 1))))
FIDELITY_RUNNER_ARGS = ["--threads", "1", "--runs", "1", "--warmup-runs", "0", "--warmup-s", "0", "--min-time-s", "0"]


def arm_fidelity(model: Path, x, y, reference, *, cpu: str, timeout_s: float, console=None) -> dict:
    """`model` on the emulated `cpu` on up to FIDELITY_SAMPLES of (x, y): its accuracy there, and its top-1
    agreement and max |difference| with `reference` (the outputs it should give: PyTorch's, or this host's
    runtime's). BenchFailed with one line when it cannot be had."""
    import numpy as np

    from edgedistill.bench.local import BenchFailed

    n = min(len(x), FIDELITY_SAMPLES)
    with tempfile.TemporaryDirectory(prefix="edgedistill-arm-") as work:
        data, saved = Path(work) / "data.npz", Path(work) / "outputs.npy"
        np.savez(data, x=x[:n], y=y[:n])
        result = run_emulated(model, data, cpu=cpu, runner_args=FIDELITY_RUNNER_ARGS, timeout_s=timeout_s,
                              save_outputs=saved, console=console)
        try:
            outputs = np.load(saved, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BenchFailed(f"the emulated runner's outputs could not be read: {exc}") from None
    want = np.asarray(reference[:n], dtype=np.float32)
    if outputs.shape != want.shape:
        raise BenchFailed(f"emulated outputs have shape {outputs.shape}; expected {want.shape}")
    return {"target": result["target"], "cpu": cpu, "machine": result["device"].get("machine"),
            "runtime": result["runtime"], "qemu": result["emulated"]["qemu"], "timing": result["emulated"]["timing"],
            "samples": n, "accuracy": result["accuracy"],
            "top1_agreement": float((outputs.argmax(1) == want.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(outputs.astype(np.float32) - want).max())}
