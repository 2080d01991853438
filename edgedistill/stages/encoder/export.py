"""Encoder export stage: ONNX (dynamic batch and sequence) and TFLite (int32 tokens, fixed length), fp32 and
dynamic int8; each artifact's embeddings of the held-out sentences are compared with the PyTorch student's
(parity) and with the teacher's (its quality)."""

from __future__ import annotations

import numpy as np
import torch

from edgedistill.errors import StageFailed
from edgedistill.export.formats import artifact_name
from edgedistill.fileio import sha256_json
from edgedistill.lm.distill import encoder_agreement
from edgedistill.lm.encoder import embed, load_encoder
from edgedistill.lm.text import held_out_texts
from edgedistill.pipeline.engine import StageResult

PARITY_ATOL = 1e-4  # max |difference| of fp32 embeddings (unit vectors)


def run(spec, ctx) -> StageResult:
    cfg = spec.export
    model, tokenizer = load_encoder(ctx.output("distill", "config").parent)
    texts = held_out_texts(spec.data, spec.seed)
    student = embed(model, tokenizer, texts, max_length=cfg.seq_len).numpy()
    teacher = torch.from_numpy(np.load(ctx.output("teacher", "test_embeddings")))
    out = ctx.stage_dir("export")
    metadata = {"pipeline": spec.name, "config_digest": sha256_json(spec.model_dump(mode="json")),
                "model": ctx.metrics("student")["arch"]}
    artifacts, outputs, warnings = [], {}, []
    for fmt in cfg.formats:
        fp32_path = out / artifact_name(fmt, "fp32")
        try:
            _export(fmt, model, fp32_path, cfg, metadata)
        except Exception as exc:  # noqa: BLE001 - one format failing leaves the others going
            for precision in cfg.precisions:
                artifacts.append({"format": fmt, "requested_precision": precision, "precision": precision,
                                  "status": "failed", "error": f"conversion failed: {_one_line(exc)}", "attempts": []})
            warnings.append(f"{fmt}: conversion failed: {_one_line(exc)}")
            continue
        for precision in cfg.precisions:
            path = fp32_path if precision == "fp32" else out / artifact_name(fmt, precision)
            try:
                if precision != "fp32":
                    _quantize(fmt, fp32_path, path)
                with ctx.console.status(f"  {fmt} {precision}: embedding {len(texts)} held-out sentences…"):
                    got = _embeddings(fmt, path, tokenizer, texts, cfg.seq_len)
            except Exception as exc:  # noqa: BLE001
                artifacts.append({"format": fmt, "requested_precision": precision, "precision": precision,
                                  "status": "failed", "error": _one_line(exc), "attempts": []})
                continue
            diff = float(np.abs(got - student).max())
            quality = encoder_agreement(torch.from_numpy(got), teacher)
            parity = {"max_abs_diff": diff, "top1_agreement": None, "accuracy": quality["mean_cosine"],
                      "neighbour_overlap": quality["neighbour_overlap"], "atol": PARITY_ATOL,
                      "within_tolerance": diff <= PARITY_ATOL}
            if precision == "fp32" and not parity["within_tolerance"]:
                warnings.append(f"{fmt} fp32: embeddings differ from PyTorch by up to {diff:.2e} (> {PARITY_ATOL:g})")
            key = f"{fmt}-{precision}"
            outputs[key] = path
            artifacts.append({"format": fmt, "requested_precision": precision, "precision": precision, "status": "ok",
                              "path": str(path.relative_to(ctx.run_dir)), "bytes": path.stat().st_size,
                              "parity": parity, "attempts": []})
            ctx.console.print(f"  {fmt} {precision}: {path.stat().st_size / 2**20:.1f} MiB, max |Δ| {diff:.1e} from "
                              f"PyTorch, mean cosine to the teacher {quality['mean_cosine']:.4f}")
    if not outputs:
        raise StageFailed("no artifact was exported: " + "; ".join(a["error"] for a in artifacts))
    return StageResult(outputs=outputs, metrics={"artifacts": artifacts, "seq_len": cfg.seq_len}, warnings=warnings)


def _export(fmt: str, model, path, cfg, metadata: dict) -> None:
    from edgedistill.lm.export import encoder_to_onnx, encoder_to_tflite

    if fmt == "onnx":
        encoder_to_onnx(model, path, opset=cfg.opset, metadata=metadata)
    else:
        encoder_to_tflite(model, path, seq_len=cfg.seq_len, metadata=metadata)


def _quantize(fmt: str, fp32_path, path) -> None:
    from edgedistill.quiet import quiet

    with quiet():  # the quantizers print their own progress and summaries
        _quantize_loud(fmt, fp32_path, path)


def _quantize_loud(fmt: str, fp32_path, path) -> None:
    if fmt == "onnx":
        from edgedistill.quantize.onnx import quantize_onnx

        quantize_onnx(fp32_path, path, "int8-dynamic")
    else:
        from edgedistill.quantize.tflite import quantize_tflite

        quantize_tflite(fp32_path, path, "int8-dynamic")


def _embeddings(fmt: str, path, tokenizer, texts: list[str], seq_len: int) -> np.ndarray:
    from edgedistill.lm.export import onnx_embed, tflite_embed

    if fmt == "onnx":
        return onnx_embed(path, tokenizer, texts, max_length=seq_len)
    return tflite_embed(path, tokenizer, texts, seq_len=seq_len)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
