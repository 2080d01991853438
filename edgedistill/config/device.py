"""Device profiles: hardware figures, runtimes, default precision/format, budgets, connection."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgedistill.bench.ssh import check_ssh_address
from edgedistill.config.loading import load_model
from edgedistill.errors import UserError, unknown_choice
from edgedistill.export.formats import FormatName, RuntimeName
from edgedistill.resources import bundled_dir


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Hardware(Strict):
    """Datasheet figures; each profile cites the source of its numbers in YAML comments."""

    processor: str = Field(description="CPU model; 'auto' reads this machine")
    accelerator: str | None = None
    compute: Literal["cpu", "gpu"] = Field(default="cpu", description="the unit the peak figures describe")
    cores: int | Literal["auto"] = Field(description="cores the model may use; 'auto' reads this machine")
    clock_ghz: float = Field(gt=0)
    peak_gflops_fp32: float = Field(gt=0)
    peak_gops_int8: float = Field(gt=0)
    memory_bandwidth_gbps: float = Field(gt=0)
    ram_mb: int | Literal["auto"]
    arm_cpu: str | None = Field(default=None, description="the CPU core the emulated ARM target emulates "
                                                          "(a qemu -cpu name: cortex-a53, -a57, -a72, -a76, "
                                                          "neoverse-n1); null for a device that is not ARM")
    vector_bits: Literal[128, 256, 512, "auto"] = Field(
        default=128, description="SIMD register width (NEON and SSE: 128, AVX2: 256, AVX-512: 512); 'auto' reads "
                                 "this machine. Convolutions with fewer channels than it holds floats run below peak")

    @field_validator("arm_cpu")
    @classmethod
    def _emulated_cpu(cls, value: str | None) -> str | None:
        from edgedistill.bench.emulated import CPUS

        if value is not None and value not in CPUS:
            raise ValueError(unknown_choice("emulated CPU", value, CPUS))
        return value

    @model_validator(mode="after")
    def _detect(self) -> "Hardware":
        # 'auto' is for the host profile: the figures come from the machine the tool runs on.
        if self.processor == "auto":
            self.processor = host_cpu()
        if self.cores == "auto":
            self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if self.ram_mb == "auto":
            import psutil

            self.ram_mb = int(psutil.virtual_memory().total / 2**20)
        if self.vector_bits == "auto":
            self.vector_bits = _host_vector_bits()
        return self

    @property
    def vector_lanes_fp32(self) -> int:
        return int(self.vector_bits) // 32


def _cpuinfo(field: str) -> str | None:
    """The first value of `field` in /proc/cpuinfo (Linux), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def host_cpu_flags() -> list[str]:
    """The SIMD flags of this host's CPU that decide its kernels (AVX2, AVX-512, VNNI, AMX), from /proc/cpuinfo;
    [] where it has none to name (ARM, or no /proc)."""
    flags = (_cpuinfo("flags") or "").split()
    return sorted({f for f in flags if f.startswith(("avx", "sse4", "fma", "amx"))})


def _host_vector_bits() -> int:
    """The widest SIMD registers this machine's CPU flags name (x86); 128 elsewhere (Arm NEON)."""
    flags = host_cpu_flags()
    return 512 if "avx512f" in flags else 256 if "avx2" in flags else 128


def host_cpu() -> str:
    import platform

    return _cpuinfo("model name") or platform.processor() or platform.machine()


def host_kernels() -> str:
    """The vector instructions this host's float kernels use, as people name them: AVX-512 (with VNNI), AVX2;
    the machine's name elsewhere. Training on other ones (or another thread count) sums in another order."""
    import platform

    flags = host_cpu_flags()
    if "avx512f" in flags:
        return "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-512"
    return "AVX2" if "avx2" in flags else platform.machine()


class Budgets(Strict):
    """What the deployed model must fit in. Unset budgets are not checked."""

    max_model_mb: float | None = Field(default=None, gt=0)
    max_ram_mb: float | None = Field(default=None, gt=0)
    max_latency_p90_ms: float | None = Field(default=None, gt=0)
    max_accuracy_drop: float | None = Field(default=None, ge=0, le=1, description="teacher minus deployed, 0..1")


class Connection(Strict):
    """How to reach the device for benchmarks. Plain OpenSSH: ~/.ssh/config applies unless ssh_config says."""

    transport: Literal["local", "ssh"] = "local"
    address: str | None = None
    python: str = Field(default="python3", description="the interpreter on the device that runs the runner")
    ssh_config: Path | None = Field(default=None, description="used only when --ssh-config names it too: an "
                                    "OpenSSH config can run commands here (ProxyCommand, LocalCommand, Match exec)")
    trust_new_host: bool = False
    connect_timeout_s: float = Field(default=10, gt=0, le=300)

    _safe_address = field_validator("address", mode="before")(check_ssh_address)


class Reference(Strict):
    """A latency measured on the device and published: a model the student families build, how it ran, where
    it was published. The predictor is scaled to these until the device is calibrated (latency/references.py)."""

    model: Literal["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_lite0"]
    width: float = Field(default=1.0, gt=0, le=4)
    resolution: int = Field(default=224, ge=32, le=1024)
    runtime: str = Field(max_length=80, description="what ran it, as published (TFLite with XNNPACK, ...)")
    precision: Literal["fp32", "int8"]
    threads: int = Field(ge=1, le=256)
    latency_ms: float = Field(gt=0, le=1e6)
    clock_ghz: float | None = Field(default=None, gt=0, description="the board's clock when it differs from "
                                                                   "hardware.clock_ghz (overclocked boards)")
    source: str = Field(pattern=r"^https://\S+$", max_length=300, description="an address a reader can open")
    note: str = Field(default="", max_length=300)


class DeviceProfile(Strict):
    name: str
    description: str
    hardware: Hardware
    runtimes: list[RuntimeName] = Field(min_length=1)
    default_format: FormatName
    default_precision: Literal["fp32", "fp16", "int8"]
    budgets: Budgets
    execution_providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"],
                                           description="onnxruntime providers to try in order; CPU is the fallback")
    connection: Connection | None = None
    references: list[Reference] = Field(default_factory=list, max_length=64)


def _scan_devices() -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Profiles by name, the bundled ones first, then EDGEDISTILL_DEVICES folders (os.pathsep); and every
    name defined more than once, with all its files."""
    extra = os.environ.get("EDGEDISTILL_DEVICES", "").split(os.pathsep)
    dirs = [bundled_dir("devices")] + [Path(p) for p in extra if p]
    files: dict[str, Path] = {}
    twice: dict[str, list[Path]] = {}
    for folder in dirs:
        for path in sorted(folder.glob("*.yaml")):
            if path.stem in files and files[path.stem].resolve() != path.resolve():
                twice.setdefault(path.stem, [files[path.stem]]).append(path)
            files.setdefault(path.stem, path)
    return files, twice


def device_files() -> dict[str, Path]:
    """Known device profiles by name (see `_scan_devices`); a name defined twice keeps its first file."""
    return _scan_devices()[0]


def device_path(name_or_path: str) -> Path:
    """The profile file of a device name (see `device_files`) or of a YAML path. A name that a folder in
    EDGEDISTILL_DEVICES defines again is refused: a folder must not silently change what a bundled name runs."""
    path = Path(name_or_path)
    # A bare name is always a profile's name, never a file of the working folder that happens to be called so:
    # such a file must not replace a bundled profile (its connection would receive the model and the test data).
    if path.suffix in (".yaml", ".yml") or os.sep in name_or_path or (os.altsep and os.altsep in name_or_path):
        return path
    files, twice = _scan_devices()
    if name_or_path in twice:
        places = ", ".join(str(p) for p in twice[name_or_path])
        raise UserError(f"device {name_or_path!r} is defined more than once ({places}); rename the profile in "
                        "EDGEDISTILL_DEVICES, or give its file's path instead of the name")
    if name_or_path not in files:
        hint = f"; to use the file {name_or_path!r} here, give its path: ./{name_or_path}" if path.is_file() else ""
        raise UserError(unknown_choice("device", name_or_path, files) + hint)
    return files[name_or_path]


def load_device(name_or_path: str) -> DeviceProfile:
    """A device profile by name (see `device_files`) or by the path of a YAML file."""
    return load_model(DeviceProfile, device_path(name_or_path))
