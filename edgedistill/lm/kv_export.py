"""A Llama-style decoder to ONNX with its KV cache as explicit inputs and outputs, for greedy generation on a
runtime with nothing but the model file.

The graph: `input_ids` (1, S) int64 and, per block, `past_key_<i>` / `past_value_<i>` (1, kv_heads, P, head_dim)
in; `logits` (1, vocab) of the last position and `present_key_<i>` / `present_value_<i>` (1, kv_heads, P + S,
head_dim) out. The prompt goes in once with empty pasts (P = 0: time to first token), then one token at a
time with the presents fed back as pasts. Only the last position's logits are computed, so a long prompt does
not pay for a vocabulary-wide projection at every token.

The forward is written out here (RMSNorm, rotary embedding, grouped-query attention, gated MLP, through the
Hugging Face model's own modules and weights) rather than traced through transformers' cache classes, whose
mask construction does not trace to a graph with dynamic lengths; the export is checked against the Hugging
Face model's next-token logits (`lm.kv_export.parity`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgedistill.fileio import atomic_output
from edgedistill.lm.chat import decoder_layers


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class CachedDecoder(nn.Module):
    """forward(input_ids, *pasts) -> (last-position logits, *presents); pasts and presents alternate key, value
    per block."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        config = model.config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads

    def forward(self, input_ids: torch.Tensor, *pasts: torch.Tensor):
        inner = self.model.model
        seq, past_len = input_ids.shape[1], pasts[0].shape[2]
        positions = torch.arange(seq, dtype=torch.long).unsqueeze(0) + past_len
        hidden = inner.embed_tokens(input_ids)
        cos, sin = inner.rotary_emb(hidden, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        # Query i (at position past_len + i) sees keys 0..past_len + i.
        keys_at = torch.arange(seq, dtype=torch.long).unsqueeze(1) + past_len
        allowed = torch.arange(past_len + seq, dtype=torch.long).unsqueeze(0) <= keys_at
        bias = torch.where(allowed, 0.0, torch.finfo(hidden.dtype).min).to(hidden.dtype)
        presents = []
        for i, layer in enumerate(decoder_layers(self.model)):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(1, seq, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(1, seq, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(1, seq, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            k = torch.cat([pasts[2 * i], k], dim=2)
            v = torch.cat([pasts[2 * i + 1], v], dim=2)
            presents += [k, v]
            groups = self.heads // self.kv_heads
            k_all, v_all = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
            scores = q @ k_all.transpose(-1, -2) * (self.head_dim ** -0.5) + bias
            out = (scores.softmax(-1) @ v_all).transpose(1, 2).reshape(1, seq, self.heads * self.head_dim)
            hidden = hidden + attn.o_proj(out)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        logits = self.model.lm_head(inner.norm(hidden[:, -1]))
        return (logits, *presents)


def io_names(layers: int) -> tuple[list[str], list[str]]:
    pasts = [f"past_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    presents = [f"present_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    return ["input_ids", *pasts], ["logits", *presents]


def empty_pasts(config, length: int = 0, dtype=torch.float32) -> list[torch.Tensor]:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return [torch.zeros(1, config.num_key_value_heads, length, head_dim, dtype=dtype)
            for _ in range(2 * config.num_hidden_layers)]


def decoder_to_onnx(model: nn.Module, path: Path, *, opset: int = 17, metadata: dict | None = None) -> Path:
    """Export the KV-cache decoder with dynamic prompt and cache lengths (traced at 3 new tokens after 2)."""
    import onnx

    from edgedistill.export.onnx import require_onnx, set_metadata

    require_onnx()
    wrapper = CachedDecoder(model.eval()).eval()
    layers = model.config.num_hidden_layers
    inputs, outputs = io_names(layers)
    sample = (torch.ones(1, 3, dtype=torch.long), *empty_pasts(model.config, 2))
    axes = {"input_ids": {1: "sequence"}, **{n: {2: "past"} for n in inputs[1:]},
            **{n: {2: "total"} for n in outputs[1:]}}
    with atomic_output(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, sample, str(tmp), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=opset, dynamo=False)
        onnx.checker.check_model(str(tmp))
    set_metadata(path, {"producer": "edgedistill", "task": "text-generation", "kv_cache": "explicit",
                        "layers": layers, **(metadata or {})})
    return path


@torch.no_grad()
def torch_next_logits(model: nn.Module, ids: list[int]) -> np.ndarray:
    """The Hugging Face model's next-token logits after `ids` (the reference for parity)."""
    return model(torch.tensor([ids])).logits[0, -1].float().numpy()
