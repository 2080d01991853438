"""A Llama-style decoder to TFLite through litert-torch's generative API, with its KV cache as signature inputs
and outputs: what LiteRT runs on a phone or a Pi.

The file has one `prefill_<n>` signature per prefill length n (tokens (1, n) int32, input_pos (n,) int32, and
per block kv_cache_k_<i> / kv_cache_v_<i> (1, cache, kv_heads, head_dim)) and a `decode` signature (one token),
each returning the updated caches; decode also returns logits (1, 1, vocab). The cache has a fixed number of
positions (prompt plus answer must fit), and the attention mask is built inside the model from input_pos, so a
prompt shorter than n is padded at its end: the padding's cache slots lie after the prompt and are overwritten
by decode before any query can see them. As in LiteRT-LM, a prompt goes through prefill except its last token,
which the first decode call takes (that call's logits give the first new token).

The model is the generative API's own DecoderOnlyModel (examples/smollm in litert-torch builds SmolLM2 the same
way) with the Hugging Face weights loaded under its Llama tensor names; the export is checked against the
Hugging Face model on next-token logits by the causal export stage.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import types
from pathlib import Path

from torch import nn

from edgedistill.errors import UserError

PREFILL_LENGTHS = (32, 128)  # a short prompt pays for 32 positions, not 128; longer prompts go in chunks


@contextlib.contextmanager
def _schema_as_tensorflow():
    """litert-torch 0.10's generative layers import the TFLite flatbuffer schema from TensorFlow (for LoRA
    weights, unused here); LiteRT ships the same generated schema module, so it stands in while they import,
    and TensorFlow (1.3 GB) is not needed. Nothing named tensorflow stays in sys.modules afterwards."""
    from ai_edge_litert import schema_py_generated

    names = ("tensorflow", "tensorflow.lite", "tensorflow.lite.python")
    added = {n: types.ModuleType(n) for n in names if n not in sys.modules}
    schema_name = "tensorflow.lite.python.schema_py_generated"
    if schema_name not in sys.modules:
        added[schema_name] = schema_py_generated
    sys.modules.update(added)
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _generative_api():
    with _schema_as_tensorflow():
        from litert_torch.generative.layers import model_config
        from litert_torch.generative.utilities import converter, export_config, model_builder
    return model_config, converter, export_config, model_builder


def _rope_theta(config) -> float:
    # transformers 5 keeps rope_theta and the scaling type in rope_parameters; older ones in rope_theta/rope_scaling.
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise UserError(f"TFLite decoder export: rotary scaling {rope.get('rope_type')!r} is not supported "
                        "(plain rotary embeddings only)")
    return float(rope.get("rope_theta") or getattr(config, "rope_theta", 10000.0))


def litert_config(config, cache_length: int):
    """The generative API's ModelConfig for a Hugging Face Llama-style config (gated SiLU MLP, RMSNorm,
    grouped-query attention without biases, plain rotary embeddings)."""
    cfg = _generative_api()[0]
    problems = []
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"activation {config.hidden_act!r} (needs silu)")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("biases in attention or MLP")
    if problems:
        raise UserError(f"TFLite decoder export covers Llama-style decoders; {config.model_type}: "
                        + "; ".join(problems))
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    norm = cfg.NormalizationConfig(type=cfg.NormalizationType.RMS_NORM, epsilon=config.rms_norm_eps)
    block = cfg.TransformerBlockConfig(
        attn_config=cfg.AttentionConfig(num_heads=heads, head_dim=head_dim,
                                        num_query_groups=config.num_key_value_heads,
                                        rotary_base=_rope_theta(config), rotary_percentage=1.0),
        ff_config=cfg.FeedForwardConfig(type=cfg.FeedForwardType.GATED,
                                        activation=cfg.ActivationConfig(cfg.ActivationType.SILU),
                                        intermediate_size=config.intermediate_size),
        pre_attention_norm_config=norm, post_attention_norm_config=norm)
    return cfg.ModelConfig(vocab_size=config.vocab_size, num_layers=config.num_hidden_layers,
                           max_seq_len=cache_length, embedding_dim=config.hidden_size, block_configs=block,
                           final_norm_config=norm,
                           lm_head_share_weight_with_embedding=bool(config.tie_word_embeddings))


def decoder_to_tflite(model: nn.Module, path: Path, *, cache_length: int, metadata: dict | None = None) -> Path:
    """Convert the decoder with prefill signatures of PREFILL_LENGTHS (those shorter than the cache) and decode; fp32
    weights (int8 is the quantizer's job, as for every TFLite artifact)."""
    from edgedistill.export.tflite import require_litert, write_with_metadata
    from edgedistill.quiet import quiet

    require_litert()
    _, converter, export_config, model_builder = _generative_api()
    config = litert_config(model.config, cache_length)
    names = (model_builder.TENSOR_NAMES if config.lm_head_share_weight_with_embedding
             else model_builder.TENSOR_NAMES_WITH_SEPARATE_LM_HEAD)
    weights = {k: v.detach().float() for k, v in model.state_dict().items()}
    reauthored = model_builder.build_decoder_only_model("weights.safetensors", config, names,
                                                        custom_loader=lambda _: dict(weights),
                                                        mask_cache_size=cache_length)
    prefill = [n for n in PREFILL_LENGTHS if n < cache_length] or [cache_length // 2]
    with tempfile.TemporaryDirectory() as work, quiet():
        written = converter.convert_to_tflite(reauthored, work, "decoder", prefill_seq_len=prefill,
                                              kv_cache_max_len=cache_length, quantize="none", config=config,
                                              export_config=export_config.ExportConfig())
        path.parent.mkdir(parents=True, exist_ok=True)
        write_with_metadata(Path(written).read_bytes(), path, {
            "producer": "edgedistill", "task": "text-generation", "kv_cache": "litert-generative",
            "cache_length": cache_length, "prefill_lengths": prefill, "layers": config.num_layers,
            **(metadata or {})})
    return path
