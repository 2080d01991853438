"""The pipeline file: data, teacher, student, distillation, export, benchmark and report sections."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from edgedistill.config.device import Budgets, Strict, device_files
from edgedistill.config.loading import read_yaml, validate
from edgedistill.errors import unknown_choice
from edgedistill.models import family_names


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    """Resolve a path against the pipeline file's folder; it must exist."""
    base = (info.context or {}).get("base_dir")
    path = value if value.is_absolute() or base is None else Path(base) / value
    if not path.is_file():
        raise ValueError(f"file not found: {str(path)!r}")
    return path.resolve()


class _SplitFractions(Strict):
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0, lt=0.5)


class DigitsData(_SplitFractions):
    kind: Literal["digits"]


class NpzData(_SplitFractions):
    kind: Literal["npz"]
    path: Path
    class_names: list[str] | None = None

    _path_exists = field_validator("path")(_existing_file)


Data = Annotated[DigitsData | NpzData, Field(discriminator="kind")]


class Architecture(Strict):
    family: str = "resnet"
    width: float = Field(default=1.0, gt=0, le=4)
    depth: float = Field(default=1.0, gt=0, le=4)

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        if value not in family_names():
            raise ValueError(unknown_choice("model family", value, family_names()))
        return value


class Training(Strict):
    epochs: int = Field(default=20, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    lr: float = Field(default=3e-3, gt=0, le=10)
    weight_decay: float = Field(default=1e-4, ge=0, le=1)
    optimizer: Literal["adam", "sgd"] = "adam"


class TrainedTeacher(Architecture, Training):
    kind: Literal["train"]


class CheckpointTeacher(Architecture):
    """A teacher from a checkpoint: safetensors, or a torch state dict loaded with weights_only=True."""

    kind: Literal["checkpoint"]
    path: Path

    _path_exists = field_validator("path")(_existing_file)


Teacher = Annotated[TrainedTeacher | CheckpointTeacher, Field(discriminator="kind")]


class Student(Architecture):
    pass


class Distill(Training):
    epochs: int = Field(default=30, ge=1, le=10_000)
    temperature: float = Field(default=4.0, gt=0, le=100)
    alpha: float = Field(default=0.7, ge=0, le=1, description="weight of the soft (teacher) term; 1-alpha on labels")


class Export(Strict):
    formats: list[Literal["onnx"]] = Field(default_factory=lambda: ["onnx"], min_length=1)
    opset: int = Field(default=17, ge=11, le=21)
    parity_atol: float = Field(default=1e-4, gt=0)


class Bench(Strict):
    target: Literal["local"] = "local"
    warmup_runs: int = Field(default=10, ge=0)
    warmup_s: float = Field(default=0.2, ge=0)
    runs: int = Field(default=100, ge=1)
    min_time_s: float = Field(default=0.5, ge=0)
    threads: int | None = Field(default=None, ge=1, description="default: the device's cores, capped at the host's")
    timeout_s: float = Field(default=600, gt=0)


class Report(Strict):
    formats: list[Literal["json", "md"]] = Field(default_factory=lambda: ["json", "md"], min_length=1)


class PipelineSpec(Strict):
    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    seed: int = Field(default=0, ge=0)
    device: str
    budgets: Budgets = Field(default_factory=Budgets, description="overrides the device profile's budgets")
    data: Data
    teacher: Teacher
    student: Student
    distill: Distill = Field(default_factory=Distill)
    export: Export = Field(default_factory=Export)
    bench: Bench = Field(default_factory=Bench)
    report: Report = Field(default_factory=Report)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str, info: ValidationInfo) -> str:
        if value.endswith((".yaml", ".yml")):
            base = (info.context or {}).get("base_dir")
            return str(_existing_file(Path(value), info)) if base else value
        known = device_files()
        if value not in known:
            raise ValueError(unknown_choice("device", value, known))
        return value


def load_pipeline(path: Path, overrides: dict | None = None) -> PipelineSpec:
    """Load and validate a pipeline file; `overrides` (from the CLI) replace top-level keys first."""
    data, node = read_yaml(path)
    if isinstance(data, dict) and overrides:
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return validate(PipelineSpec, data, path, node, context={"base_dir": path.resolve().parent})
