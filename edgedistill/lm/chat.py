"""Instruction-tuned causal LMs (Llama-style decoders from Hugging Face folders or GGUF files): loading,
layer-dropped students, chat-formatted prompts, greedy answers, and the data of sequence- and token-level KD.

Sequence-level KD (Kim & Rush 2016, arXiv:1606.07947) trains the student on the teacher's own greedy answers
to the training prompts; token-level KD adds the teacher's top-k next-token logits on those answers (the
on-disk cache of `lm.causal`). Prompts go through the tokenizer's chat template on both sides, identically.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from edgedistill.distill.trainer import progress_bar
from edgedistill.errors import UserError
from edgedistill.fileio import cache_root, sha256_file
from edgedistill.lm.encoder import keep_layers, transformers

MAX_GGUF_BYTES = 8 << 30  # a GGUF for an edge device's teacher; the dequantized copy is about 4x larger


def gguf_as_folder(path: Path, console: Console | None = None) -> Path:
    """A Hugging Face folder (safetensors) with the GGUF's weights dequantized to float32 and its tokenizer and
    chat template, made once and kept in the cache under the GGUF's sha256 (dequantizing takes minutes)."""
    if path.stat().st_size > MAX_GGUF_BYTES:
        raise UserError(f"{path}: {path.stat().st_size >> 20} MB, over the {MAX_GGUF_BYTES >> 30} GB this tool "
                        "loads as a teacher")
    folder = cache_root() / "gguf" / sha256_file(path)[:32]
    if (folder / "config.json").is_file():
        return folder
    hf = transformers()
    with (console or Console()).status(f"  dequantizing {path.name} (once; kept in {folder.parent})…"):
        try:
            tokenizer = hf.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            quantized = hf.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                dtype=torch.float32)
        except (ImportError, ValueError, OSError, KeyError) as exc:
            raise UserError(f"{path}: cannot be read as a GGUF causal LM ({str(exc).splitlines()[0][:300]}); "
                            "transformers reads GGUF with the packages gguf and accelerate installed") from None
        # The loaded model remembers it came from a GGUF and refuses to be saved: rebuild it from its config.
        config = quantized.config.to_dict()
        config.pop("quantization_config", None)
        config.pop("_model_name_or_path", None)
        model = hf.AutoModelForCausalLM.from_config(hf.AutoConfig.for_model(**config), dtype=torch.float32)
        model.load_state_dict(quantized.state_dict())
        save_causal(model, tokenizer, folder)
    return folder


def load_causal(folder: Path):
    """(model, tokenizer) from a local Hugging Face folder: float32, eval mode, no remote code, no download."""
    hf = transformers()
    try:
        tokenizer = hf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = hf.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32,
                                                        trust_remote_code=False)
    except (ValueError, OSError, KeyError) as exc:
        raise UserError(f"{folder}: not a causal LM folder transformers can load "
                        f"({str(exc).splitlines()[0][:300]})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def save_causal(model: nn.Module, tokenizer, folder: Path) -> dict[str, Path]:
    """Model and tokenizer as a Hugging Face folder, written whole or not at all (renamed into place)."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return {"config": folder / "config.json", "weights": folder / "model.safetensors"}


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a Llama-style decoder (model.model.layers)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise UserError(f"{type(model).__name__}: not a Llama-style decoder (no model.layers); the causal-LM "
                        "pipeline takes Llama, Mistral, Qwen2 or SmolLM-shaped models")
    return layers


@torch.no_grad()
def block_influence(model: nn.Module, sequences: list[list[int]]) -> list[float]:
    """Each block's influence on the residual stream, 1 - cos(input, output) averaged over tokens (ShortGPT's
    Block Influence, Men et al. 2024, arXiv:2403.03853): a block that barely turns the stream matters least."""
    model.eval()
    layers = decoder_layers(model)
    totals = np.zeros(len(layers))

    def measure(i):
        def hook(module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, tuple) else output
            totals[i] += (1 - torch.cosine_similarity(x, y, dim=-1)).sum().item()
        return hook

    _run_hooked(model, sequences, [layer.register_forward_hook(measure(i), with_kwargs=True)
                                   for i, layer in enumerate(layers)])
    return (totals / max(1, sum(map(len, sequences)))).tolist()


@torch.no_grad()
def blocks_kept_by_kl(model: nn.Module, sequences: list[list[int]], k: int,
                      console: Console | None = None) -> list[int]:
    """The k blocks to keep, chosen on the distillation objective: each middle block is skipped once and the
    change of the teacher's next-token distribution measured (KL(teacher || teacher without it), averaged over
    every position of `sequences`); the first, the last and the k - 2 whose skipping costs most are kept. One
    teacher pass per block: re-measuring after each drop (iterative) took over 7 minutes for SmolLM2 on 32
    prompts beside other jobs on 2 cores without finishing, so it is not done."""
    model.eval()
    layers = decoder_layers(model)
    n = len(layers)
    if not 2 <= k <= n:
        raise UserError(f"student layers {k}: selection by KL keeps the first and last; need 2..{n}")
    width = max(map(len, sequences))
    ids = torch.tensor([s + [s[-1]] * (width - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences], dtype=torch.bool)
    reference = torch.log_softmax(model(ids).logits[mask], dim=-1)

    def skip(module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        return (x, *output[1:]) if isinstance(output, tuple) else x

    costs = {}
    with progress_bar(console or Console()) as progress:
        task = progress.add_task("blocks by KL", total=n - 2, info="")
        for i in range(1, n - 1):
            handle = layers[i].register_forward_hook(skip, with_kwargs=True)
            try:
                log_q = torch.log_softmax(model(ids).logits[mask], dim=-1)
            finally:
                handle.remove()
            costs[i] = float(torch.nn.functional.kl_div(log_q, reference, log_target=True, reduction="batchmean"))
            progress.update(task, advance=1)
    middle = sorted(costs, key=costs.get, reverse=True)[:k - 2]
    return sorted([0, n - 1, *middle])


def _run_hooked(model: nn.Module, sequences: list[list[int]], handles: list) -> None:
    """The model over each sequence, then the hooks removed (also when it fails)."""
    try:
        for ids in sequences:
            model(torch.tensor([ids]))
    finally:
        for h in handles:
            h.remove()


def layer_dropped(teacher: nn.Module, k: int, select: str | list[int] = "uniform",
                  influence: list[float] | None = None, kept: list[int] | None = None) -> tuple[nn.Module, list[int]]:
    """A copy of a decoder `teacher` keeping k of its blocks, initialized from them; embeddings, final norm and
    head are the teacher's. `select`: uniform, first, last, a list, or importance (the k blocks of highest
    `influence`, the first and last always kept: they turn the stream most), or kl (`kept` from
    blocks_kept_by_kl)."""
    blocks = decoder_layers(teacher)
    n = len(blocks)
    if select == "importance":
        if influence is None:
            raise ValueError("select importance needs the blocks' influence")
        if not 2 <= k <= n:
            raise UserError(f"student layers {k}: importance keeps the first and last; need 2..{n}")
        middle = sorted(range(1, n - 1), key=lambda i: -influence[i])[:k - 2]
        kept = sorted([0, n - 1, *middle])
    elif select == "kl":
        if kept is None or len(kept) != k:
            raise ValueError("select kl needs the k kept blocks (blocks_kept_by_kl)")
    else:
        kept = keep_layers(n, k, select)
    student = copy.deepcopy(teacher)
    student.model.layers = nn.ModuleList(copy.deepcopy(blocks[i]) for i in kept)
    for i, block in enumerate(student.model.layers):
        block.self_attn.layer_idx = i  # a block addresses its slot of the KV cache by this index
    student.config.num_hidden_layers = k
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [student.config.layer_types[i] for i in kept]
    return student.train(), kept


@torch.no_grad()
def mlp_importance(model: nn.Module, sequences: list[list[int]]) -> list[torch.Tensor]:
    """Per block, the mean |act(gate(x)) * up(x)| of each feed-forward neuron over the tokens of `sequences`."""
    totals, handles = {}, []
    for i, layer in enumerate(decoder_layers(model)):
        mlp = layer.mlp

        def capture(module, inputs, output, i=i, mlp=mlp):
            x = inputs[0]
            act = (mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)).abs()
            totals[i] = totals.get(i, 0) + act.reshape(-1, act.shape[-1]).sum(0)

        handles.append(mlp.register_forward_hook(capture))
    _run_hooked(model, sequences, handles)
    return [totals[i] for i in range(len(totals))]


def narrow_mlp(model: nn.Module, keep: int, importance: list[torch.Tensor]) -> nn.Module:
    """Each block keeps its `keep` most important feed-forward neurons (rows of gate and up, columns of down)."""
    for layer, scores in zip(decoder_layers(model), importance):
        mlp = layer.mlp
        if keep > mlp.up_proj.out_features:
            raise UserError(f"student intermediate {keep}: larger than the teacher's {mlp.up_proj.out_features}")
        neurons = scores.topk(keep).indices.sort().values
        for name in ("gate_proj", "up_proj"):
            old = getattr(mlp, name)
            new = nn.Linear(old.in_features, keep, bias=old.bias is not None)
            new.weight.data.copy_(old.weight.data[neurons])
            if old.bias is not None:
                new.bias.data.copy_(old.bias.data[neurons])
            setattr(mlp, name, new)
        down = mlp.down_proj
        new_down = nn.Linear(keep, down.out_features, bias=down.bias is not None)
        new_down.weight.data.copy_(down.weight.data[:, neurons])
        if down.bias is not None:
            new_down.bias.data.copy_(down.bias.data)
        mlp.down_proj = new_down
        mlp.intermediate_size = keep
    model.config.intermediate_size = keep
    return model


def describe(model: nn.Module) -> dict:
    config = model.config
    return {"arch": f"{type(model).__name__.removesuffix('ForCausalLM')} {config.num_hidden_layers} layers, "
                    f"hidden {config.hidden_size}, feed-forward {config.intermediate_size}",
            "layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "intermediate": config.intermediate_size, "vocab": config.vocab_size,
            "params": sum(p.numel() for p in model.parameters())}


def chat_ids(tokenizer, prompt: str) -> list[int]:
    """A user turn through the tokenizer's chat template, ready for the assistant's answer (a tokenizer without
    a template gets the plain prompt and a newline)."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
        return list(ids)
    return tokenizer(prompt + "\n")["input_ids"]


def stop_ids(model: nn.Module, tokenizer) -> set[int]:
    """Token ids that end an answer: the tokenizer's EOS and the generation config's."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


@torch.no_grad()
def greedy_answers(model: nn.Module, tokenizer, prompts: list[list[int]], max_new_tokens: int, *,
                   batch_size: int = 32, label: str = "generating", console: Console | None = None,
                   sample_temperature: float | None = None) -> list[list[int]]:
    """Greedy answers (token ids, the stop token included when reached) to chat-formatted prompts, batched with
    left padding and the KV cache (32 at a time: SmolLM2's answers to 64 prompts took 61 s at 8, 35 s at 32 on
    this 2-core host, the same tokens); sampled from the whole distribution at `sample_temperature` instead when one
    is given (seed torch's generator first for answers that repeat)."""
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_ids(model, tokenizer)
    answers: list[list[int]] = []
    with progress_bar(console or Console()) as progress:
        task = progress.add_task(label, total=len(prompts), info="")
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            width = max(map(len, batch))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
            how = ({"do_sample": False} if sample_temperature is None else
                   {"do_sample": True, "temperature": sample_temperature, "top_k": 0, "top_p": 1.0})
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, **how,
                                 pad_token_id=pad, eos_token_id=sorted(stops))
            for row in out[:, width:].tolist():
                end = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
                answers.append(row[:end])
            progress.update(task, advance=len(batch))
    return answers


def answer_batch(prompts: list[list[int]], answers: list[list[int]], pad: int,
                 max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, targets): prompt + answer, right-padded to one length (at most `max_length`, prompts cut from the
    left when too long); targets marks the answer's tokens, what the student learns to say."""
    rows, marks = [], []
    for prompt, answer in zip(prompts, answers):
        answer = answer[:max_length - 1]
        prompt = prompt[-(max_length - len(answer)):]
        rows.append(prompt + answer)
        marks.append([False] * len(prompt) + [True] * len(answer))
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    targets = torch.tensor([m + [False] * (width - len(m)) for m in marks])
    return ids, targets


@torch.no_grad()
def answer_perplexity(model: nn.Module, ids: torch.Tensor, targets: torch.Tensor, batch_size: int = 16) -> float:
    """exp of the mean cross-entropy of the marked tokens (the teacher's answers) given what comes before them."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(ids), batch_size):
        x, keep = ids[i:i + batch_size], targets[i:i + batch_size, 1:]
        logits = model(x).logits[:, :-1][keep]
        total += torch.nn.functional.cross_entropy(logits, x[:, 1:][keep], reduction="sum").item()
        count += int(keep.sum())
    return float(np.exp(total / max(count, 1)))
