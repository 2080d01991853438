"""The pipeline file: data, teacher, student, distillation, export, benchmark and report sections."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, create_model, field_validator, model_serializer, model_validator

from edgedistill.bench.targets import check_target
from edgedistill.config.device import Budgets, Strict, device_path
from edgedistill.config.loading import read_yaml, validate
from edgedistill.distill.terms import TERMS
from edgedistill.errors import UserError, unknown_choice
from edgedistill.export.formats import FormatName
from edgedistill.fileio import in_package
from edgedistill.models import FOREIGN_TEACHERS, family_names, is_factory
from edgedistill.precisions import PRECISIONS, get_precision


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    """Resolve a path against the pipeline file's folder (or `package:NAME/file` inside an installed Python
    package); it must exist."""
    base = (info.context or {}).get("base_dir")
    if str(value).startswith("package:"):
        value = _in_package(str(value))
    path = value if value.is_absolute() or base is None else Path(base) / value
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder; expected a file")
    if not path.is_file():
        # Debian ships data sets as packages: /usr/share/datasets/<name>/ comes with dataset-<name>.
        parts = path.parts
        debian = len(parts) > 5 and parts[1:4] == ("usr", "share", "datasets")
        hint = f" (apt-get install dataset-{parts[4]})" if debian else ""
        raise ValueError(f"file not found: {str(path)!r}{hint}")
    return path.resolve()


def _in_package(value: str) -> Path:
    try:
        return in_package(value)
    except LookupError as exc:  # pydantic reports ValueErrors as the field's problem
        raise ValueError(str(exc)) from None


def _existing_folder(value: str, info: ValidationInfo) -> Path:
    """A folder, relative to the pipeline file's; `package:NAME/sub/folder` is a folder inside an installed
    Python package (found without importing it), for data that ships as a wheel."""
    if value.startswith("package:"):
        path = _in_package(value)
    else:
        base = (info.context or {}).get("base_dir")
        path = Path(value) if Path(value).is_absolute() or base is None else Path(base) / value
    if not path.is_dir():
        raise ValueError(f"folder not found: {str(path)!r}")
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
    layout: Literal["auto", "nchw", "nhwc"] = Field(
        default="auto", description="of a 4-D x: auto reads (N, C, H, W) or (N, H, W, C) by where the 1, 3 or 4 "
                                    "channels are, and asks when the shape does not say")

    _path_exists = field_validator("path")(_existing_file)


class IdxData(_SplitFractions):
    """MNIST-format (idx) files, gzipped or not: `images` (N, H, W) and `labels` (N,). With `test_images` and
    `test_labels` (an official test split), the test split is theirs and test_fraction is not used."""

    kind: Literal["idx"]
    images: Path
    labels: Path
    test_images: Path | None = None
    test_labels: Path | None = None
    class_names: list[str] | None = None
    subset: float = Field(default=1.0, gt=0, le=1, description="a seeded, class-stratified share of each file, for "
                                                               "quick trials (1: all of it)")

    _paths_exist = field_validator("images", "labels", "test_images", "test_labels")(
        lambda value, info: None if value is None else _existing_file(value, info))

    @model_validator(mode="after")
    def _test_files_together(self) -> "IdxData":
        if (self.test_images is None) != (self.test_labels is None):
            raise ValueError("test_images and test_labels go together: give both, or neither")
        return self


class Preprocessing(Strict):
    """How an image file becomes the model's input; it travels with every exported artifact."""

    resize: int = Field(default=224, ge=1, le=4096, description="the shorter side is resized to this")
    crop: int | None = Field(default=None, ge=1, le=4096,
                             description="then a centre square of this side (default: resize; ImageNet models are "
                                         "usually evaluated at resize 256, crop 224)")
    channels: Literal["rgb", "gray"] = "rgb"
    mean: list[float] | Literal["auto"] | None = Field(
        default=None, description="per channel, on 0..1 pixel values, with std: (x - mean) / std; auto: measured "
                                  "once on the training split (stored in every artifact's metadata)")
    std: list[float] | Literal["auto"] | None = Field(default=None)
    scale: list[float] = Field(default=[1 / 255], min_length=1, max_length=3,
                               description="or: each 0..255 pixel value times scale plus offset")
    offset: list[float] = Field(default=[0.0], min_length=1, max_length=3)

    @model_serializer(mode="wrap")
    def _one_normalization_written(self, handler):
        # Written out (pipeline.resolved.yaml), mean/std must read back as they were given: scale and offset are
        # then only the defaults, and written beside mean they would be refused as a second normalization.
        dumped = handler(self)
        if self.mean is not None and isinstance(dumped, dict):
            dumped.pop("scale", None)
            dumped.pop("offset", None)
        return dumped

    @model_validator(mode="after")
    def _one_normalization(self) -> "Preprocessing":
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together: give both, or neither")
        if self.mean is not None and {"scale", "offset"} & self.model_fields_set:
            raise ValueError("give mean and std, or scale and offset, not both")
        if (self.mean == "auto") != (self.std == "auto"):
            raise ValueError("mean: auto and std: auto go together")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if isinstance(values, list) and not 1 <= len(values) <= 3:
                raise ValueError(f"{name} {values}: give 1 value, or one per channel (3 for rgb)")
        if isinstance(self.std, list) and any(v <= 0 for v in self.std):
            raise ValueError(f"std {self.std}: every value must be above 0")
        if self.crop is not None and self.crop > self.resize:
            raise ValueError(f"crop {self.crop} is larger than resize {self.resize}; crop at most the resized side")
        return self


class ImageFolderData(_SplitFractions):
    """Image files: `root/<class>/<image>` (class names from the folders), or file names that hold the class
    index (`labels_from: filename`). With `root/train/` and `root/test/` (and optionally `root/val/`), those
    are the splits. Images are decoded batch by batch, never all at once."""

    kind: Literal["imagefolder"]
    root: Path
    preprocess: Preprocessing = Field(default_factory=Preprocessing)
    labels_from: Literal["folders", "filename", "table"] = "folders"
    labels_file: str = Field(default="labels.csv", max_length=200,
                             description="labels_from table: a file under root, one image per line: its path "
                                         "(relative to the file's folder) and columns split by commas or spaces")
    label_column: int = Field(default=1, ge=1, le=100, description="labels_from table: the column (0 is the "
                                                                   "path) that holds each image's label")
    label_map: dict[str, str] | None = Field(
        default=None, description="labels_from table: label as written -> class name (several labels may share a "
                                  "class; values compare as numbers when both are numbers); default: each "
                                  "distinct label is a class")
    decoded_cache: Literal["auto", "off"] = Field(
        default="auto", description="auto: every image decoded and resized once into a memory-mapped uint8 file "
                                    "in the cache (when it stays under 8 GiB); off: decode each batch from the files")
    label_pattern: str = Field(default=r"_(\d+)\.\w+$", max_length=200,
                               description="labels_from filename: a regex whose first group is the class index")
    include: str = Field(default="*", max_length=200, description="labels_from filename: a glob of file names")
    class_names: list[str] | None = None
    num_classes: int | None = Field(default=None, ge=1, le=100_000,
                                    description="labels_from filename: the class count, when not every class "
                                                "appears (an ImageNet teacher's 1,000)")
    stratify: bool = Field(default=True, description="false: a seeded shuffle split, for a handful of images "
                                                     "whose classes appear once or twice")
    follow_links: bool = Field(default=False, description="read images through symbolic links that lead out of "
                                                          "root (refused by default)")

    @field_validator("root", mode="before")
    @classmethod
    def _root_exists(cls, value, info: ValidationInfo) -> Path:
        return _existing_folder(str(value), info)

    @field_validator("label_map", mode="before")
    @classmethod
    def _labels_as_text(cls, value):
        # YAML reads `0.5: defective` with a float key; the table's labels are text, so both become text.
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value

    @field_validator("label_pattern")
    @classmethod
    def _one_group(cls, value: str) -> str:
        import re

        try:
            groups = re.compile(value).groups
        except re.error as exc:
            raise ValueError(f"{value!r} is not a regular expression ({exc})") from None
        if groups < 1:
            raise ValueError(f"{value!r} has no group; put the class index in ( )")
        return value


Data = Annotated[DigitsData | NpzData | IdxData | ImageFolderData, Field(discriminator="kind")]


class Architecture(Strict):
    family: str = "resnet"
    width: float = Field(default=1.0, gt=0, le=4)
    depth: float = Field(default=1.0, gt=0, le=4)

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        if value not in family_names() and not is_factory(value):
            raise ValueError(unknown_choice("model family", value, family_names())
                             + "; or your own as package.module:function")
        return value


class Training(Strict):
    epochs: int = Field(default=20, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    lr: float = Field(default=3e-3, gt=0, le=10)
    weight_decay: float = Field(default=1e-4, ge=0, le=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    warmup_epochs: int = Field(default=0, ge=0, le=1000, description="the LR rises linearly over this many epochs, "
                                                                     "then decays (cosine) over the rest")

    @model_validator(mode="after")
    def _warmup_within_epochs(self):
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} leaves no epoch to train at full LR in epochs "
                             f"{self.epochs}: set it below epochs (a tenth of them is common)")
        return self


class Augment(Strict):
    """Training augmentations, drawn per batch from the run's seed: a random resized crop, a left-right flip,
    a turn, a shift (in that order). In distillation the teacher sees the same augmented batch as the student."""

    shift: int = Field(default=1, ge=0, le=64, description="random translation by up to this many pixels")
    flip: bool = Field(default=False, description="mirror left-right with probability 1/2 (not for digits or text)")
    turn: bool = Field(default=False, description="turn by a random multiple of 90 degrees and mirror top-bottom "
                                                  "with probability 1/2: for images with no up (cells, microscopy, "
                                                  "aerial); square inputs")
    crop_area: float = Field(default=1.0, gt=0, le=1,
                             description="below 1: random resized crop of this much to all of the image's area")


class Finetune(Training):
    """A new head for a teacher whose classes are not the data's, trained on the data: alone (the rest frozen,
    `scope: head`), or with the whole network (`scope: whole`, for data unlike the pretraining's)."""

    epochs: int = Field(default=5, ge=1, le=1000)
    lr: float = Field(default=1e-3, gt=0, le=10)
    batch_size: int = Field(default=32, ge=1, le=65_536)
    scope: Literal["head", "whole"] = Field(default="head", description="head: only the new head trains; whole: "
                                            "every layer, from the pretrained weights (checkpoint teachers)")
    augment: Augment | None = Field(default=None, description="random crops, flips and shifts of the training images")


class TrainedTeacher(Architecture, Training):
    kind: Literal["train"]
    augment: Augment | None = Field(default=None, description="random crops, flips and shifts of the training images")


class CheckpointTeacher(Architecture):
    """A teacher from a checkpoint: safetensors, or a torch state dict loaded with weights_only=True."""

    kind: Literal["checkpoint"]
    path: Path
    finetune: Finetune | None = Field(default=None, description="when the checkpoint's head has other classes than "
                                                                "the data: a new head, fitted on the data")

    _path_exists = field_validator("path")(_existing_file)


class _ForeignTeacher(Strict):
    """A teacher from another framework (models/teachers.py): logits from its file or folder."""

    path: Path
    finetune: Finetune | None = Field(default=None, description="when its classes are not the data's: a new head, "
                                                                "fitted on the data with the rest frozen")

    @field_validator("finetune")
    @classmethod
    def _head_only(cls, value: Finetune | None) -> Finetune | None:
        # A foreign teacher is read from its file again by later stages, with the new head beside it: weights
        # changed inside it would not travel (a checkpoint teacher's whole network is saved, and can).
        if value is not None and value.scope == "whole":
            raise ValueError("scope whole: a teacher from another framework gets a new head only (scope: head); "
                             "give its weights as teacher.kind: checkpoint of a family to fine-tune all of it")
        return value


class HuggingFaceTeacher(_ForeignTeacher):
    """transformers' AutoModelForImageClassification from a local folder (save_pretrained), no remote code."""

    kind: Literal["huggingface"]

    @field_validator("path", mode="before")
    @classmethod
    def _folder_exists(cls, value, info: ValidationInfo) -> Path:
        return _existing_folder(str(value), info)


class TorchScriptTeacher(_ForeignTeacher):
    """A TorchScript file (torch.jit.save)."""

    kind: Literal["torchscript"]

    _path_exists = field_validator("path")(_existing_file)


class ExportedTeacher(_ForeignTeacher):
    """A torch.export program (torch.export.save, .pt2)."""

    kind: Literal["exported"]

    _path_exists = field_validator("path")(_existing_file)


class OnnxTeacher(_ForeignTeacher):
    """An ONNX classifier, run by onnxruntime: logit terms only."""

    kind: Literal["onnx"]

    _path_exists = field_validator("path")(_existing_file)


Teacher = Annotated[TrainedTeacher | CheckpointTeacher | HuggingFaceTeacher | TorchScriptTeacher | ExportedTeacher
                    | OnnxTeacher, Field(discriminator="kind")]


class Student(Architecture):
    init: Literal["random", "teacher", "pretrained"] = Field(
        default="random", description="teacher: every teacher tensor the student shares by name and shape is copied "
                                      "in (the same family at a smaller depth keeps the first blocks of each "
                                      "stage), the rest drawn at random; a teacher of one of the built-in families. "
                                      "pretrained: the same, from the teacher's checkpoint as the file holds it, "
                                      "before the teacher stage fine-tunes it (what the data taught the teacher "
                                      "then reaches the student only through distillation); a checkpoint teacher")
    size: Literal["fixed", "auto"] = Field(
        default="fixed", description="auto: width and depth chosen by the device's budgets (edgedistill select)")
    max_param_ratio: float = Field(default=0.5, gt=0, le=1,
                                   description="auto: candidates have at most this share of the teacher's parameters")
    objective: Literal["largest", "smallest", "fastest"] = Field(
        default="largest", description="auto: among the candidates that fit every budget, the one with the most "
                                       "parameters (keeps the most accuracy), the fewest, or the lowest predicted p90")
    chosen_by: Literal["auto"] | None = Field(
        default=None, description="set in a run's pipeline.resolved.yaml: this fixed width and depth were chosen by "
                                  "size: auto (the candidates and the choice are in the student stage and the report)")

    @model_serializer(mode="wrap")
    def _auto_has_no_width_or_depth(self, handler):
        # Written out, an auto student must read back as one: the defaults of width and depth are not choices.
        dumped = handler(self)
        if self.size == "auto" and isinstance(dumped, dict):
            for key in ("width", "depth", "chosen_by"):
                dumped.pop(key, None)
        return dumped

    @model_validator(mode="after")
    def _auto_chooses_width_and_depth(self) -> "Student":
        given = {"width", "depth"} & self.model_fields_set
        if self.size == "auto" and given:
            raise ValueError(f"size auto chooses {' and '.join(sorted(given))}; remove {', '.join(sorted(given))} "
                             "or set size: fixed")
        return self


def phase_defaults(name: str) -> dict:
    """What a phase changes from the distillation settings: the warm-up trains on the easier half without the
    logits terms (and without the terms that do not keep it); the fine-tune on labels alone, at a tenth of the LR."""
    if name == "warmup":
        return {"alpha": 0.0, "easy_fraction": 0.5, **{t: 0.0 for t, term in TERMS.items() if not term.in_warmup}}
    if name == "finetune":
        return {"alpha": 0.0, "lr_scale": 0.1, **{t: 0.0 for t in TERMS}}
    return {}


class _Phase(Strict):
    """A fraction of training with its own loss weights. Unset fields take the phase's defaults."""

    name: Literal["warmup", "distill", "finetune"]
    fraction: float = Field(gt=0, le=1)
    alpha: float | None = Field(default=None, ge=0, le=1)
    lr_scale: float | None = Field(default=None, gt=0, le=10)
    easy_fraction: float | None = Field(default=None, gt=0, le=1,
                                        description="train on this share of examples, most teacher-confident first")


# A phase multiplies each loss term's weight by a field named after the term (features: 0.5, dkd: 0...).
Phase = create_model("Phase", __base__=_Phase, **{
    name: (float | None, Field(default=None, ge=0, description=f"multiplies {name}.weight")) for name in TERMS})


STANDARD_SCHEDULE = [{"name": "warmup", "fraction": 0.2}, {"name": "distill", "fraction": 0.6},
                     {"name": "finetune", "fraction": 0.2}]


class Progressive(Strict):
    """Teacher-assistant KD (Mirzadeh et al. 2020) for a large width gap."""

    mode: Literal["auto", "on", "off"] = "auto"
    threshold: float = Field(default=16.0, gt=1, description="auto: used when teacher/student channels reach this")
    assistants: int = Field(default=1, ge=1, le=4)


# baseline: auto trains the scratch baseline when it costs at most this many examples seen (the quickstart's
# distillation sees 35,010; Fashion-MNIST's 60,000 images for 30 epochs, 1.8 million).
BASELINE_AUTO_EXAMPLES = 2_000_000


class _Distill(Training):
    epochs: int = Field(default=30, ge=1, le=10_000)
    # Below 0.05 the softened logits overflow float32 (logits / T); the literature uses 1 to 20.
    temperature: float = Field(default=4.0, ge=0.05, le=100)
    temperature_end: float | None = Field(default=None, ge=0.05, le=100, description="anneal linearly to this")
    alpha: float = Field(default=0.7, ge=0, le=1, description="weight of the soft (teacher) term; 1-alpha on labels")
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    jsd_beta: float = Field(default=0.5, gt=0, lt=1)
    schedule: Literal["standard"] | list[Phase] | None = None
    augment: Augment | None = None
    cache: Literal["auto", "off"] = Field(default="auto", description="teacher outputs on disk, reused across runs")
    teacher_views: int = Field(default=0, ge=0, le=64, description="with augment: the teacher's outputs on this many "
                                                                   "seeded augmented views of each training image, "
                                                                   "computed once and cached, the student shown one "
                                                                   "of them each epoch; 0: the teacher runs on every "
                                                                   "batch")
    progressive: Progressive = Field(default_factory=Progressive)
    baseline: Literal["auto", "scratch", "off"] = Field(
        default="auto", description="scratch: also train the same student from its labels alone (same epochs, batch, "
                                    "optimizer, LR) and report distillation's gain over it; auto: scratch when the "
                                    f"training split x epochs is at most {BASELINE_AUTO_EXAMPLES:,} examples")
    ship: Literal["best", "distilled", "scratch"] = Field(
        default="best", description="which student the later stages export and benchmark: best: the scratch "
                                    "baseline's when it validates higher than the distilled one, else the distilled "
                                    "one; distilled; scratch (needs the baseline)")
    processes: int = Field(default=1, ge=1, le=256, description="data-parallel processes on this machine (torchrun, "
                                                                  "DDP: gloo on CPU, nccl on GPU)")

    @field_validator("schedule")
    @classmethod
    def _fractions_sum_to_one(cls, value):
        if isinstance(value, list):
            total = sum(p.fraction for p in value)
            if abs(total - 1) > 1e-6:
                raise ValueError(f"phase fractions must add up to 1, got {total:g}")
        return value

    @model_validator(mode="after")
    def _scratch_needs_its_baseline(self):
        if self.ship == "scratch" and self.baseline == "off":
            raise ValueError("distill.ship: scratch ships the scratch baseline, which baseline: 'off' does not train; "
                             "set distill.baseline: scratch, or ship: best")
        return self

    @model_validator(mode="after")
    def _views_need_augmentation(self):
        if self.teacher_views and self.augment is None:
            raise ValueError(f"distill.teacher_views {self.teacher_views}: views of what? set distill.augment "
                             "(crop_area, flip, turn, shift), or teacher_views: 0")
        return self

    @model_validator(mode="after")
    def _consistent_views(self):
        term = getattr(self, "consistent", None)
        if term is not None and self.augment is not None:
            raise ValueError("distill.augment and distill.consistent both set the training views; keep one "
                             "(consistent: crop_area, flip, shift, mixup)")
        labels = self.alpha < 1 or getattr(self, "dkd", None) is not None or self.schedule is not None
        if term is not None and term.mixup > 0 and labels:
            raise ValueError(f"distill.consistent.mixup {term.mixup:g} mixes two images into each view, which the "
                             "true labels do not describe: set distill.alpha: 1 (teacher only) and leave out dkd "
                             "and schedule (its phases train on labels), or set mixup: 0")
        return self

    def phases(self) -> list[Phase]:
        """The schedule as phases; no schedule is one distillation phase."""
        if self.schedule is None:
            return [Phase(name="distill", fraction=1.0)]
        raw = STANDARD_SCHEDULE if self.schedule == "standard" else [p.model_dump() for p in self.schedule]
        return [Phase(**p) for p in raw]


# Each loss term of the registry is an optional section of its own (distill.features, distill.dkd...).
Distill = create_model("Distill", __base__=_Distill, **{
    name: (term.Config | None, Field(default=None, description=f"the {name} loss term, as "
                                                                f"{term.__module__.replace('.', '/')}.py describes it"))
    for name, term in TERMS.items()})


class Calibration(Strict):
    method: Literal["minmax", "entropy", "percentile"] = Field(
        default="minmax", description="ONNX has all three; TFLite's quantizer min/max only (used, and recorded, "
                                      "whatever is asked)")
    samples: int = Field(default=128, ge=1, le=100_000, description="a seeded draw from the training split, "
                                                                    "stratified by class")


class Parity(Strict):
    """How close an artifact's outputs on the test split must be to PyTorch's, or it fails (a failed cell)."""

    fp32_atol: float = Field(default=1e-4, gt=0, description="fp32: max |output difference|")
    # fp16 keeps ~3 significant digits: measured on the quickstart student, 1.8e-2 (ONNX) and 2.1e-2 (TFLite)
    # against outputs up to ~20, about 0.1 % of their range; the bound leaves ten times that.
    fp16_rtol: float = Field(default=1e-2, gt=0, le=1, description="fp16: max |output difference| as a share of "
                                                                   "PyTorch's largest |output|")
    min_agreement: float = Field(default=0.9, ge=0, le=1, description="int8 and int8-dynamic: the least top-1 "
                                                                      "agreement with PyTorch (their outputs move "
                                                                      "by design; the accuracy gate judges them)")

    def problem(self, precision: str, max_abs_diff: float, agreement: float, reference_scale: float) -> str | None:
        """Why an artifact of `precision` fails parity, or None when it passes."""
        if get_precision(precision).parity == "exact" and max_abs_diff > self.fp32_atol:
            return f"max |Δ| {max_abs_diff:.2e} exceeds export.parity.fp32_atol {self.fp32_atol:g}"
        kind = get_precision(precision).parity
        if kind == "relative" and max_abs_diff > self.fp16_rtol * reference_scale:
            return (f"max |Δ| {max_abs_diff:.2e} exceeds export.parity.fp16_rtol {self.fp16_rtol:g} of the largest "
                    f"|output| {reference_scale:.3g}")
        if kind == "agreement" and agreement < self.min_agreement:
            return f"top-1 agreement {agreement:.2%} is below export.parity.min_agreement {self.min_agreement:.0%}"
        return None


class Gate(Strict):
    """The accuracy gate of quantized artifacts (edgedistill/quantize/gate.py)."""

    enabled: bool = True
    max_drop: float = Field(default=0.01, ge=0, le=1, description="the most validation accuracy a quantized "
                                                                  "artifact may lose against the float student before "
                                                                  "the gate falls back (the budget max_accuracy_drop "
                                                                  "is against the teacher)")
    judge_on: Literal["auto", "host", "device"] = Field(
        default="auto", description="whose kernels measure a quantized artifact's accuracy: device, the device's ARM "
                                    "core under emulation (qemu), this host's figure beside it; host, this host's "
                                    "runtime; auto, device when the profile names an ARM core, bench.emulate is not "
                                    "off and qemu-user is installed")


class Export(Strict):
    """Every format in `formats` at every precision in `precisions`; quantized ones pass the accuracy gate."""

    formats: list[FormatName] = Field(default_factory=lambda: ["onnx"], min_length=1)
    precisions: list[Literal[PRECISIONS + ("auto",)]] = Field(
        default_factory=lambda: ["fp32"], min_length=1, description="auto: the device profile's default precision")
    opset: int = Field(default=17, ge=11, le=21)
    parity: Parity = Field(default_factory=Parity)
    calibration: Calibration = Field(default_factory=Calibration)
    gate: Gate = Field(default_factory=Gate)

    @model_validator(mode="before")
    @classmethod
    def _earlier_spellings(cls, data):
        # Pipelines written before parity and gate were sections: parity_atol: X, gate: true|false.
        if isinstance(data, dict):
            data = dict(data)
            if "parity_atol" in data and "parity" not in data:
                data["parity"] = {"fp32_atol": data.pop("parity_atol")}
            if isinstance(data.get("gate"), bool):
                data["gate"] = {"enabled": data["gate"]}
        return data


class Bench(Strict):
    target: str = Field(default="auto", description="auto: the device profile's ssh connection if it has one, else "
                                                    "local; or ssh://[user@]host[:port] (latency is measured here; "
                                                    "ARM kernels under emulation are `emulate`)")
    emulate: Literal["auto", "on", "off"] = Field(
        default="auto", description="also run every artifact on the device's ARM CPU under qemu (hardware.arm_cpu) "
                                    "for accuracy and agreement on ARM kernels; auto: when qemu-user is installed")
    trust_new_host: bool = False
    warmup_runs: int = Field(default=10, ge=0)
    warmup_s: float = Field(default=0.2, ge=0)
    runs: int = Field(default=100, ge=1)
    min_time_s: float = Field(default=0.5, ge=0)
    threads: int | None = Field(default=None, ge=1, description="default: the device's cores, capped at the host's")
    timeout_s: float = Field(default=600, gt=0)

    _known_target = field_validator("target", mode="before")(check_target)


class Report(Strict):
    formats: list[Literal["json", "md", "html"]] = Field(default_factory=lambda: ["json", "md", "html"], min_length=1)


class TrainOn(Strict):
    """Where every training loop of the run runs (edgedistill/distill/compute.py)."""

    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:[0-9]{1,2})?)$",
                        description="auto: CUDA when torch sees a GPU, else the CPU; cpu; cuda (under torchrun: "
                                    "each rank's GPU); cuda:N")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32", description="bf16 / fp16: the forward pass under autocast (fp16 with loss scaling)")


class PipelineBase(Strict):
    """What every kind of pipeline has: its name, seed, device and budgets, benchmark and report."""

    name: str = Field(min_length=1, max_length=100, description="also the run folder's name, made one safe "
                                                                  "path component (runs/<name>/...)")
    description: str = Field(default="", max_length=10_000)
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="numpy and torch take seeds below 2^32")
    device: str
    budgets: Budgets = Field(default_factory=Budgets, description="overrides the device profile's budgets")
    bench: Bench = Field(default_factory=Bench)
    report: Report = Field(default_factory=Report)
    train: TrainOn = Field(default_factory=TrainOn, description="the training device and precision, for every "
                                                               "stage that trains")

    _known_device = field_validator("device")(lambda value, info: check_device(value, info))

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError(f"{value!r} holds control characters; use letters, digits, '.', '_' or '-'")
        return value


class PipelineSpec(PipelineBase):
    """An image classifier's pipeline."""

    data: Data
    teacher: Teacher
    student: Student
    distill: Distill = Field(default_factory=Distill)
    export: Export = Field(default_factory=Export)

    @model_validator(mode="after")
    def _pretrained_needs_a_checkpoint(self) -> "PipelineSpec":
        if self.student.init == "pretrained" and self.teacher.kind != "checkpoint":
            raise ValueError(f"student.init: pretrained starts the student from the teacher's checkpoint file, and "
                             f"this teacher is of kind {self.teacher.kind}; use teacher.kind: checkpoint, or init: "
                             "teacher (the teacher stage's weights) or random")
        return self

    @model_validator(mode="after")
    def _terms_the_teacher_can_give(self) -> "PipelineSpec":
        # ONNX, TorchScript and torch.export teachers are compiled graphs: logits, no layers to hook by name.
        if not FOREIGN_TEACHERS.get(self.teacher.kind, True):
            used = [name for name, term in TERMS.items()
                    if getattr(self.distill, name) is not None and term.needs_teacher_layers]
            if used:
                raise ValueError(f"distill.{used[0]}: reads the teacher's layers, and a teacher of kind "
                                 f"{self.teacher.kind} gives logits only; remove distill.{used[0]} (kd and dkd work "
                                 "on logits), or use a checkpoint, factory or huggingface teacher")
        return self


def check_device(value: str, info: ValidationInfo) -> str:
    """A shipped profile's name, or a profile YAML resolved against the pipeline's folder."""
    if value.endswith((".yaml", ".yml")):
        base = (info.context or {}).get("base_dir")
        return str(_existing_file(Path(value), info)) if base else value
    try:
        device_path(value)
    except UserError as exc:
        raise ValueError(str(exc)) from None
    return value


# The kinds of pipeline other than image classification, by their data.kind: (module, spec class, stages package).
# The stages package holds the stages that differ (teacher, student, distill, export, and bench where it does);
# the others are the image pipeline's.
PIPELINE_KINDS = {
    "text": ("edgedistill.config.encoder", "EncoderPipelineSpec", "edgedistill.stages.encoder"),
    "instructions": ("edgedistill.config.causal", "CausalPipelineSpec", "edgedistill.stages.causal"),
}


def load_pipeline(path: Path, overrides: dict | None = None):
    """Load and validate a pipeline file (a PipelineSpec, or the spec of PIPELINE_KINDS for its data.kind);
    `overrides` (from the CLI) replace top-level keys first."""
    data, node = read_yaml(path)
    if isinstance(data, dict) and overrides:
        for key, value in overrides.items():
            if isinstance(value, dict):  # a section: merge its set keys into the file's
                value = {k: v for k, v in value.items() if v is not None}
                if value:
                    data[key] = {**(data.get(key) or {}), **value}
            elif value is not None:
                data[key] = value
    kind = PipelineSpec
    data_kind = data["data"].get("kind") if isinstance(data, dict) and isinstance(data.get("data"), dict) else None
    if isinstance(data_kind, str) and data_kind in PIPELINE_KINDS:
        import importlib

        module, name, _ = PIPELINE_KINDS[data_kind]
        kind = getattr(importlib.import_module(module), name)
    return validate(kind, data, path, node, context={"base_dir": path.resolve().parent})
