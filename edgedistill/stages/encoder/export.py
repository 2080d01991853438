"""Encoder export stage: ONNX (dynamic batch and sequence) and TFLite (int32 tokens, fixed length), fp32 and
dynamic int8; each artifact's embeddings of the held-out sentences are compared with the PyTorch student's
(parity) and with the teacher's (its quality)."""

from __future__ import annotations

import numpy as np
import torch

from edgedistill.errors import StageFailed
from edgedistill.export.formats import FORMATS, artifact_name
from edgedistill.fileio import sha256_json
from edgedistill.lm.distill import encoder_agreement
from edgedistill.lm.encoder import embed, load_encoder
from edgedistill.lm.formats import ENCODER
from edgedistill.lm.text import held_out_texts
from edgedistill.pipeline.engine import StageResult
from edgedistill.stages.artifacts import failed_artifact, ok_artifact, one_line

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
        fp32_path, conv = out / artifact_name(fmt, "fp32"), FORMATS[fmt]
        try:
            ENCODER[fmt].export(model, fp32_path, opset=cfg.opset, seq_len=cfg.seq_len, metadata=metadata)
        except Exception as exc:  # noqa: BLE001 - one format failing leaves the others going
            artifacts += [failed_artifact(fmt, p, f"conversion failed: {one_line(exc)}") for p in cfg.precisions]
            warnings.append(f"{fmt}: conversion failed: {one_line(exc)}")
            continue
        for precision in cfg.precisions:
            path = fp32_path if precision == "fp32" else out / artifact_name(fmt, precision)
            try:
                if precision != "fp32":
                    conv.quantize(fp32_path, path, precision, None, None, [])
                with ctx.console.status(f"  {fmt} {precision}: embedding {len(texts)} held-out sentences…"):
                    got = ENCODER[fmt].embeddings(path, tokenizer, texts, seq_len=cfg.seq_len)
            except Exception as exc:  # noqa: BLE001
                artifacts.append(failed_artifact(fmt, precision, one_line(exc)))
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
            artifacts.append(ok_artifact(fmt, precision, path, ctx.run_dir, parity))
            ctx.console.print(f"  {fmt} {precision}: {path.stat().st_size / 2**20:.1f} MiB, max |Δ| {diff:.1e} from "
                              f"PyTorch, mean cosine to the teacher {quality['mean_cosine']:.4f}")
    if not outputs:
        raise StageFailed("no artifact was exported: " + "; ".join(a["error"] for a in artifacts))
    return StageResult(outputs=outputs, metrics={"artifacts": artifacts, "seq_len": cfg.seq_len}, warnings=warnings)
