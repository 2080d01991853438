"""TFLite: litert-torch to convert, ai-edge-quantizer for the variants, LiteRT to run it."""

from __future__ import annotations

from edgedistill.export.formats import ExportFormat
from edgedistill.quiet import quiet


def _require():
    from edgedistill.export.tflite import require_litert

    require_litert()


def _export(model, sample_shape, path, *, opset, metadata):
    from edgedistill.export.tflite import torch_to_tflite

    with quiet():
        return torch_to_tflite(model, sample_shape, path, metadata=metadata)


def _quantize(fp32_path, out, precision, calibration_x, method, keep_float):
    from edgedistill.quantize.tflite import quantize_tflite

    with quiet():
        return quantize_tflite(fp32_path, out, precision, calibration_x=calibration_x, keep_float=keep_float)


def _read_metadata(path):
    from edgedistill.export.tflite import read_metadata

    return read_metadata(path)


def _write_metadata(path, metadata):
    from edgedistill.export.tflite import write_with_metadata

    write_with_metadata(path.read_bytes(), path, metadata)


def _layers(path):
    from edgedistill.quantize.tflite import first_and_last_layers

    return first_and_last_layers(path)


def _outputs(path, x):
    from edgedistill.export.tflite import tflite_outputs

    return tflite_outputs(path, x)


def _input_quantization(path):
    from edgedistill.export.tflite import input_quantization

    return input_quantization(path)


def _export_encoder(model, path, *, opset, seq_len, metadata):
    from edgedistill.lm.export import encoder_to_tflite

    return encoder_to_tflite(model, path, seq_len=seq_len, metadata=metadata)


def _encoder_embeddings(path, tokenizer, texts, *, seq_len):
    from edgedistill.lm.export import tflite_embed

    return tflite_embed(path, tokenizer, texts, seq_len=seq_len)


def _export_decoder(model, path, *, opset, max_tokens, metadata):
    from edgedistill.lm.litert_decoder import decoder_to_tflite

    return decoder_to_tflite(model, path, cache_length=max_tokens, metadata=metadata)


FORMAT = ExportFormat(
    name="tflite", suffix=".tflite", runtime="tflite", extra="tflite", color="#ff7f0e",
    converter="litert-torch", quantizer="ai-edge-quantizer",
    calibration_methods=("minmax",),  # ai-edge-quantizer estimates activation ranges by min/max only
    require=_require, export=_export, quantize=_quantize, read_metadata=_read_metadata,
    write_metadata=_write_metadata, first_and_last_layers=_layers, outputs=_outputs,
    input_quantization=_input_quantization, export_encoder=_export_encoder, encoder_embeddings=_encoder_embeddings,
    export_decoder=_export_decoder,
    decoder_feeding="signatures prefill_<n> and decode, with kv_cache_k_<i> / kv_cache_v_<i> (1, cache, kv_heads, "
                    "head_dim) fed back: the prompt but its last token through prefill (int32 tokens padded at the "
                    "end, input_pos), then decode one token at a time from the last prompt token; logits (1, 1, "
                    "vocab)")
