"""How each export format takes the language-model kinds: a sentence encoder (token ids in, embeddings out) and a
causal decoder with its KV cache. The kinds own this table; a format (export/formats/) turns a traced model into a
file and knows nothing of them. Light at import: the converters are imported when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class EncoderExport:
    export: Callable[..., Path]  # (model, path, *, opset, seq_len, metadata) -> path
    embeddings: Callable[..., np.ndarray]  # (path, tokenizer, texts, *, seq_len) -> (texts, hidden)


@dataclass(frozen=True)
class DecoderExport:
    export: Callable[..., Path]  # (model, path, *, opset, max_tokens, metadata); max_tokens: prompt + answer
    feeding: str  # how an app feeds the decoder, for the report


def _onnx_encoder(model, path, *, opset, seq_len, metadata):
    from edgedistill.lm.export import encoder_to_onnx

    return encoder_to_onnx(model, path, opset=opset, metadata=metadata)  # dynamic length: seq_len not baked in


def _onnx_embeddings(path, tokenizer, texts, *, seq_len):
    from edgedistill.lm.export import onnx_embed

    return onnx_embed(path, tokenizer, texts, max_length=seq_len)


def _tflite_encoder(model, path, *, opset, seq_len, metadata):
    from edgedistill.lm.export import encoder_to_tflite

    return encoder_to_tflite(model, path, seq_len=seq_len, metadata=metadata)


def _tflite_embeddings(path, tokenizer, texts, *, seq_len):
    from edgedistill.lm.export import tflite_embed

    return tflite_embed(path, tokenizer, texts, seq_len=seq_len)


def _onnx_decoder(model, path, *, opset, max_tokens, metadata):
    from edgedistill.lm.kv_export import decoder_to_onnx

    return decoder_to_onnx(model, path, opset=opset, metadata=metadata)  # dynamic lengths: max_tokens not baked in


def _tflite_decoder(model, path, *, opset, max_tokens, metadata):
    from edgedistill.lm.litert_decoder import decoder_to_tflite

    return decoder_to_tflite(model, path, cache_length=max_tokens, metadata=metadata)


ENCODER: dict[str, EncoderExport] = {
    "onnx": EncoderExport(_onnx_encoder, _onnx_embeddings),
    "tflite": EncoderExport(_tflite_encoder, _tflite_embeddings),
}
DECODER: dict[str, DecoderExport] = {
    "onnx": DecoderExport(_onnx_decoder, "the prompt once with empty past_key_<i> / past_value_<i> (1, kv_heads, 0, "
                                         "head_dim), then one token per call with the present_* outputs fed back as "
                                         "pasts; logits are the last position's"),
    "tflite": DecoderExport(_tflite_decoder, "signatures prefill_<n> and decode, with kv_cache_k_<i> / "
                                             "kv_cache_v_<i> (1, cache, kv_heads, head_dim) fed back: the prompt but "
                                             "its last token through prefill (int32 tokens padded at the end, "
                                             "input_pos), then decode one token at a time from the last prompt "
                                             "token; logits (1, 1, vocab)"),
}
