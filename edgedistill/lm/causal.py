"""Causal language models: a tiny GPT-2 teacher trained here, layer-dropped students, next-token KD from an
on-disk cache of the teacher's top-k logits, and the measures of preserved behaviour.

The measures are those a user of a small chat or completion model cares about: perplexity on held-out
text, how often the student's next token is the teacher's, and how close its greedy continuations of
held-out prompts are to the teacher's (exact match, and ROUGE-L on tokens).
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from edgedistill.distill.compute import CPU, Compute
from edgedistill.distill.trainer import TrainingTask, train_epochs
from edgedistill.errors import StageFailed
from edgedistill.fileio import sha256_json
from edgedistill.lm.encoder import keep_layers, transformers
from edgedistill.lm.terms import CAUSAL_TERMS, CausalStep, weighted_terms

EOS = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int = 1024):
    """A byte-level BPE tokenizer (GPT-2's scheme) learned from `texts`, as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    PreTrainedTokenizerFast = transformers().PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)


def tiny_gpt2(vocab_size: int, *, layers: int = 4, hidden: int = 128, heads: int = 4, context: int = 64):
    """A GPT-2-configured causal LM of the given size (randomly initialized)."""
    hf = transformers()
    GPT2Config, GPT2LMHeadModel = hf.GPT2Config, hf.GPT2LMHeadModel

    # use_cache off: training and these short greedy continuations recompute the context anyway.
    config = GPT2Config(vocab_size=vocab_size, n_positions=context, n_embd=hidden, n_layer=layers, n_head=heads,
                        bos_token_id=0, eos_token_id=0, attn_implementation="eager", use_cache=False)
    return GPT2LMHeadModel(config)


def layer_dropped_gpt2(teacher: nn.Module, k: int, mode: str | list[int] = "uniform") -> tuple[nn.Module, list[int]]:
    """A copy of a GPT-2 `teacher` with k of its blocks, initialized from them; embeddings, final norm and
    the (tied) head are the teacher's, so the student shares its vocabulary."""
    blocks = teacher.transformer.h
    kept = keep_layers(len(blocks), k, mode)
    student = copy.deepcopy(teacher)
    student.transformer.h = nn.ModuleList(copy.deepcopy(blocks[i]) for i in kept)
    for i, block in enumerate(student.transformer.h):
        block.attn.layer_idx = i  # a block addresses its slot of a KV cache by this index
    student.config.n_layer = k
    return student.train(), kept


def token_blocks(tokenizer, texts: list[str], context: int) -> torch.Tensor:
    """The texts as one token stream (EOS between them), cut into non-overlapping blocks of `context`."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    n = len(ids) // context
    if n == 0:
        raise StageFailed(f"text: {len(ids)} tokens, fewer than one block of {context}")
    return torch.tensor(ids[:n * context], dtype=torch.long).view(n, context)


@dataclass
class TopKLogits:
    """The teacher's k largest next-token logits and their token ids at every position of every block."""
    values: np.ndarray  # (blocks, context, k) float32, possibly memory-mapped
    indices: np.ndarray  # (blocks, context, k) int32
    status: str = "memory"  # hit | miss


def teacher_topk(teacher: nn.Module, blocks: torch.Tensor, k: int, *, root: Path | None = None,
                 batch_size: int = 32) -> TopKLogits:
    """Top-k logits of the teacher on `blocks`, computed once and kept on disk (DistillKit's offline cache),
    keyed by the digests of the teacher's weights, the blocks and k."""
    from edgedistill.distill.cache import cache_root, read_entry, weights_digest, write_entry

    data = hashlib.sha256(blocks.numpy().tobytes()).hexdigest()
    key = sha256_json({"weights": weights_digest(teacher), "blocks": data, "shape": list(blocks.shape), "k": k})[:32]
    folder = (root or cache_root()) / "topk" / key
    if read_entry(folder)[0] is not None:  # a damaged entry is removed and rebuilt below
        return TopKLogits(np.load(folder / "values.npy", mmap_mode="r"), np.load(folder / "indices.npy", mmap_mode="r"),
                          status="hit")
    teacher.eval()
    values, indices = [], []
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            top = teacher(blocks[i:i + batch_size]).logits.topk(k, dim=-1)
            values.append(top.values.numpy())
            indices.append(top.indices.to(torch.int32).numpy())
    result = TopKLogits(np.concatenate(values), np.concatenate(indices), status="miss")
    write_entry(folder, {"values.npy": result.values, "indices.npy": result.indices},
                {"k": k, "shape": list(blocks.shape)})
    return result


@dataclass
class CausalTrainConfig:
    epochs: int = 2
    batch_size: int = 16
    lr: float = 1e-3
    alpha: float = 0.0  # weight of the KD term; 1 - alpha on the next-token cross-entropy
    temperature: float = 1.0
    divergence: str = "forward_kl"
    beta: float = 0.5


@dataclass
class CausalTrained:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def train_causal(model: nn.Module, blocks: torch.Tensor, cfg: CausalTrainConfig, *, topk: TopKLogits | None = None,
                 teacher: nn.Module | None = None, targets: torch.Tensor | None = None, seed: int = 0,
                 label: str = "train", console: Console | None = None, compute: Compute = CPU) -> CausalTrained:
    """Next-token training; with alpha > 0, KD from the teacher as well: from its cached top-k logits (`topk`),
    or from its whole next-token distribution computed on each batch (`teacher`: for sequences that change from
    run to run, such as the student's own answers in on-policy distillation). With `targets` (bool, the shape of
    `blocks`), only the tokens marked there are predicted and distilled (an answer after its prompt; right
    padding is never marked, and causal attention keeps it from the real tokens). On `compute`'s device; the
    models are back on the CPU after."""
    if cfg.alpha > 0 and topk is None and teacher is None:
        raise ValueError("alpha > 0 needs the teacher's top-k logits or the teacher")
    try:
        return _train_causal(model, blocks, cfg, topk=topk, teacher=teacher, targets=targets, seed=seed,
                             label=label, console=console, compute=compute)
    finally:
        model.to("cpu")
        if teacher is not None:
            teacher.to("cpu")


def _train_causal(model, blocks, cfg, *, topk, teacher, targets, seed, label, console,
                  compute: Compute) -> CausalTrained:
    torch.manual_seed(seed)
    model.to(compute.device)
    if teacher is not None:
        teacher.to(compute.device).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    task = CausalTask(label, model, blocks, cfg, topk, targets, compute, torch.Generator().manual_seed(seed),
                      teacher)
    steps = sum(map(len, task.batches))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / steps)
    start = time.perf_counter()
    train_epochs(task, 0, optimizer, compute.scaler(), console or Console(), clip=list(model.parameters()),
                 per_step=schedule)
    model.eval()
    task.result.seconds = time.perf_counter() - start
    return task.result


def logits_at(model: nn.Module, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The next-token logits of `x` (batch, tokens) at the positions marked in `keep` (batch, tokens - 1) only:
    the head is a vocabulary-wide product at every position it is given (SmolLM2's is 28 M of a 12-block
    student's 60 M multiply-adds per token), and a prompt's positions and the padding need none of it."""
    hidden = model.base_model(input_ids=x).last_hidden_state[:, :-1][keep]
    return model.get_output_embeddings()(hidden)


class CausalTask(TrainingTask):
    """Next-token training in the one training loop: random batches of token blocks, and the terms of
    lm/terms.py:CAUSAL_TERMS at the positions whose next token counts."""

    def __init__(self, label: str, model: nn.Module, blocks: torch.Tensor, cfg: CausalTrainConfig,
                 topk: TopKLogits | None, targets: torch.Tensor | None, compute: Compute, generator: torch.Generator,
                 teacher: nn.Module | None = None):
        self.label, self.model, self.blocks, self.cfg, self.topk, self.targets, self.teacher = (
            label, model, blocks, cfg, topk, targets, teacher)
        self.compute, self.result = compute, CausalTrained()
        self.batches = [torch.randperm(len(blocks), generator=generator).split(cfg.batch_size)
                        for _ in range(cfg.epochs)]

    def train_mode(self) -> None:
        self.model.train()

    def load(self, idx: torch.Tensor):
        x = self.compute.batch(self.blocks[idx])
        # Positions whose next token counts: all, or those before a marked target.
        keep = (self.compute.batch(self.targets[idx][:, 1:]) if self.targets is not None
                else torch.ones_like(x[:, 1:], dtype=torch.bool))
        top = None
        if self.teacher is not None and self.cfg.alpha > 0:
            with torch.no_grad():
                top = [logits_at(self.teacher, x, keep), None]
        elif self.topk is not None and self.cfg.alpha > 0:
            i = idx.numpy()
            top = [self.compute.batch(torch.from_numpy(np.asarray(part[i][:, :-1])))[keep]
                   for part in (self.topk.values, self.topk.indices)]
        return x, keep, top

    def terms(self, loaded, epoch: int) -> dict[str, torch.Tensor]:
        x, keep, top = loaded
        logits = logits_at(self.model, x, keep)
        step = CausalStep(logits, x[:, 1:][keep], *(top or (None, None)), self.cfg)
        return weighted_terms(CAUSAL_TERMS, self.cfg, step)

    def end_epoch(self, epoch: int, totals: dict[str, float], seen: int) -> str:
        self.result.history.append({"epoch": epoch + 1, **{k: round(v / seen, 5) for k, v in totals.items()}})
        return f"loss {sum(totals.values()) / seen:.3f}"


@torch.no_grad()
def perplexity(model: nn.Module, blocks: torch.Tensor, batch_size: int = 32) -> float:
    """exp of the mean next-token cross-entropy over every position of `blocks`."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        x = blocks[i:i + batch_size]
        logits = model(x).logits[:, :-1]
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()
        count += x[:, 1:].numel()
    return float(np.exp(total / count))


@torch.no_grad()
def next_token_agreement(student: nn.Module, teacher: nn.Module, blocks: torch.Tensor, batch_size: int = 32) -> float:
    """Share of positions where the student's most likely next token is the teacher's."""
    student.eval(), teacher.eval()
    same = count = 0
    for i in range(0, len(blocks), batch_size):
        x = blocks[i:i + batch_size]
        same += (student(x).logits.argmax(-1) == teacher(x).logits.argmax(-1)).sum().item()
        count += x.numel()
    return same / count


@torch.no_grad()
def greedy(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> list[int]:
    """The model's greedy continuation of one prompt (1-D ids), `new_tokens` long."""
    model.eval()
    ids = prompt[None]
    for _ in range(new_tokens):
        next_id = model(ids[:, -model.config.n_positions:]).logits[0, -1].argmax()
        ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    return ids[0, len(prompt):].tolist()


def rouge_l(candidate: list, reference: list) -> float:
    """ROUGE-L F1: the longest common subsequence of two token lists over their lengths."""
    if not candidate or not reference:
        return 0.0
    prev = [0] * (len(reference) + 1)
    for a in candidate:
        row = [0]
        for j, b in enumerate(reference):
            row.append(prev[j] + 1 if a == b else max(prev[j + 1], row[j]))
        prev = row
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def generation_agreement(student: nn.Module, teacher: nn.Module, prompts: list[torch.Tensor],
                         new_tokens: int = 16) -> dict:
    """Exact match and mean ROUGE-L of the student's greedy continuations against the teacher's."""
    pairs = [(greedy(student, p, new_tokens), greedy(teacher, p, new_tokens)) for p in prompts]
    return {"exact_match": sum(s == t for s, t in pairs) / len(pairs),
            "rouge_l": float(np.mean([rouge_l(s, t) for s, t in pairs])), "prompts": len(pairs),
            "new_tokens": new_tokens}
