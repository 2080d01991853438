"""The pipeline file of a sentence encoder: text data, a Hugging Face teacher from a local folder, a student
that keeps some of its layers, embedding distillation, ONNX/TFLite export with token inputs.

A pipeline is read as this kind when its `data.kind` is `text`. Its quality measure is the mean cosine of
the student's sentence embeddings to the teacher's on held-out text; the teacher scores 1, so the budget
`max_accuracy_drop` bounds 1 - cosine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from edgedistill.config.device import Strict
from edgedistill.config.pipeline import PipelineBase
from edgedistill.export.formats import FORMATS
from edgedistill.lm.formats import ENCODER

# The formats that can take a sentence encoder (token inputs; the encoder kind's table).
EncoderFormatName = Literal[tuple(n for n in FORMATS if n in ENCODER)]  # type: ignore[valid-type]


class TextData(Strict):
    kind: Literal["text"]
    files: list[Path] | None = Field(default=None, description="UTF-8 text files, one document each; default: "
                                                               "the English bundled with Python (pydoc topics)")
    stdlib_docstrings: bool = Field(default=True, description="add the standard library's docstrings to the "
                                                              "training documents (bundled text only)")
    test_fraction: float = Field(default=0.2, gt=0, lt=0.5, description="share of documents held out")
    max_train_texts: int | None = Field(default=None, ge=1, description="use at most this many training sentences")
    max_test_texts: int = Field(default=300, ge=10, description="held-out sentences measured")

    @field_validator("files")
    @classmethod
    def _files_exist(cls, value: list[Path] | None, info: ValidationInfo) -> list[Path] | None:
        if value is None:
            return None
        if len(value) < 2:
            raise ValueError("need at least 2 files: whole documents go to training or to the held-out set")
        base = (info.context or {}).get("base_dir")
        resolved = []
        for path in value:
            path = path if path.is_absolute() or base is None else Path(base) / path
            if not path.is_file():
                raise ValueError(f"file not found: {str(path)!r}")
            resolved.append(path.resolve())
        return resolved


class EncoderTeacher(Strict):
    kind: Literal["huggingface"]
    path: str = Field(default="bundled", description="a local Hugging Face model folder, or 'bundled' for "
                                                     "all-MiniLM-L6-v2 (extra lm); nothing is downloaded")

    @field_validator("path")
    @classmethod
    def _folder(cls, value: str, info: ValidationInfo) -> str:
        if value == "bundled":
            return value
        base = (info.context or {}).get("base_dir")
        path = Path(value) if Path(value).is_absolute() or base is None else Path(base) / value
        if not (path / "config.json").is_file():
            raise ValueError(f"{str(path)!r} is not a Hugging Face model folder (no config.json); "
                             "valid: such a folder, or 'bundled'")
        return str(path.resolve())


class EncoderStudent(Strict):
    layers: int = Field(ge=1, le=48, description="teacher layers the student keeps, initialized from them")
    select: Literal["uniform", "first", "last"] | list[int] = "uniform"
    hidden: int | None = Field(default=None, ge=8, le=8192, description="a smaller hidden size (whole heads); "
                               "a trained projection maps the student's states to the teacher's width")
    intermediate: int | None = Field(default=None, ge=1, le=65536, description="a smaller feed-forward size: each "
                                     "kept layer keeps its most important neurons on the training sentences")


class EncoderDistill(Strict):
    epochs: int = Field(default=3, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1, le=4096)
    lr: float = Field(default=1e-4, gt=0, le=1)
    max_length: int = Field(default=128, ge=8, le=512, description="tokens per training text")
    embedding_weight: float = Field(default=1.0, ge=0, description="1 - cosine of sentence embeddings")
    hidden_weight: float = Field(default=0.0, ge=0, description="hidden states of the kept layers")
    hidden_loss: Literal["mse", "cosine"] = "mse"
    attention_weight: float = Field(default=0.0, ge=0, description="MiniLM attention KL, last layer")


class EncoderExport(Strict):
    formats: list[EncoderFormatName] = Field(default_factory=lambda: ["onnx"], min_length=1)
    precisions: list[Literal["fp32", "int8-dynamic"]] = Field(default_factory=lambda: ["fp32", "int8-dynamic"],
                                                              min_length=1)
    opset: int = Field(default=17, ge=14, le=21)
    seq_len: int = Field(default=128, ge=8, le=512, description="TFLite's fixed length, and the benchmark's tokens")


class EncoderPipelineSpec(PipelineBase):
    """A sentence encoder's pipeline."""

    data: TextData
    teacher: EncoderTeacher
    student: EncoderStudent
    distill: EncoderDistill = Field(default_factory=EncoderDistill)
    export: EncoderExport = Field(default_factory=EncoderExport)
