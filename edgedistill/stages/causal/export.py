"""Causal-LM export stage: the distilled student with its KV cache as explicit inputs and outputs (ONNX, TFLite;
fp32 and int8 weights), each checked against PyTorch on the next-token logits of a held-out prompt, and on the
greedy continuation of it through the cache, by the runner's own decoder for that runtime."""

from __future__ import annotations

import numpy as np

from edgedistill.errors import StageFailed
from edgedistill.export.formats import FORMATS, artifact_name
from edgedistill.fileio import sha256_json
from edgedistill.lm.chat import chat_ids, greedy_answers, load_causal
from edgedistill.lm.formats import DECODER
from edgedistill.lm.kv_export import torch_next_logits
from edgedistill.pipeline.engine import StageResult
from edgedistill.quiet import quiet
from edgedistill.stages.artifacts import failed_artifact, ok_artifact, one_line
from edgedistill.stages.causal.teacher import load_prompts

PARITY_ATOL = 1e-3  # max |difference| of fp32 next-token logits (values of order 10)
PARITY_TOKENS = 16  # greedy tokens compared through the KV cache
CACHE_STEP = 64  # a fixed-size cache (TFLite) is rounded up to this many positions


def cache_positions(spec, tokenizer, evaluation) -> int:
    """Positions a generation can need: the longest held-out prompt plus its answer, or the benchmark's
    prompt plus its new tokens; rounded up to CACHE_STEP."""
    longest = max(len(chat_ids(tokenizer, p.text)) for p in evaluation) + spec.data.answer_tokens
    need = max(longest, spec.bench.prompt_tokens + spec.bench.new_tokens)
    return -(-need // CACHE_STEP) * CACHE_STEP


def run(spec, ctx) -> StageResult:
    from edgedistill.bench.runner import RUNTIMES, Decoder

    cfg = spec.export
    model, tokenizer = load_causal(ctx.output("distill", "config").parent)
    _, evaluation = load_prompts(ctx)
    prompt = chat_ids(tokenizer, evaluation[0].text)
    reference_logits = torch_next_logits(model, prompt)
    reference_tokens = greedy_answers(model, tokenizer, [prompt], PARITY_TOKENS, label="reference",
                                      console=ctx.console)[0]
    out = ctx.stage_dir("export")
    metadata = {"pipeline": spec.name, "config_digest": sha256_json(spec.model_dump(mode="json")),
                "model": ctx.metrics("student")["arch"], "eos_token_id": tokenizer.eos_token_id,
                "chat_template": getattr(tokenizer, "chat_template", None) or ""}
    positions = cache_positions(spec, tokenizer, evaluation)
    artifacts, outputs, warnings = [], {}, []
    for fmt in cfg.formats:
        fp32_path, conv = out / artifact_name(fmt, "fp32"), FORMATS[fmt]
        try:
            with ctx.console.status(f"  {fmt}: exporting the decoder with its KV cache…"):
                DECODER[fmt].export(model, fp32_path, opset=cfg.opset, max_tokens=positions, metadata=metadata)
        except Exception as exc:  # noqa: BLE001 - one format failing leaves the others going
            artifacts += [failed_artifact(fmt, p, f"conversion failed: {one_line(exc)}") for p in cfg.precisions]
            warnings.append(f"{fmt}: conversion failed: {one_line(exc)}")
            continue
        for precision in cfg.precisions:
            path = fp32_path if precision == "fp32" else out / artifact_name(fmt, precision)
            try:
                if precision != "fp32":
                    with ctx.console.status(f"  {fmt}: {precision} weights…"):
                        conv.variant(fp32_path, path, precision, None, None, [], {**metadata})
                with quiet():  # LiteRT announces its XNNPACK delegate on stderr
                    decoder = RUNTIMES[path.suffix](str(path), 1, ["CPUExecutionProvider"])
                if not isinstance(decoder, Decoder):
                    raise StageFailed(f"{path.name} does not load as a KV-cache decoder")
                logits = decoder.start(prompt, len(reference_tokens))
                tokens = decoder.generate(prompt, len(reference_tokens), ())[0]
            except Exception as exc:  # noqa: BLE001
                artifacts.append(failed_artifact(fmt, precision, one_line(exc)))
                continue
            diff = float(np.abs(logits - reference_logits).max())
            same = sum(a == b for a, b in zip(tokens, reference_tokens)) / max(1, len(reference_tokens))
            parity = {"max_abs_diff": diff, "top1_agreement": same, "accuracy": None, "atol": PARITY_ATOL,
                      "within_tolerance": diff <= PARITY_ATOL, "what": f"next-token logits of a held-out prompt; "
                      f"top-1 agreement over {len(reference_tokens)} greedy tokens through the KV cache"}
            if precision == "fp32" and not parity["within_tolerance"]:
                warnings.append(f"{fmt} fp32: next-token logits differ from PyTorch by up to {diff:.2e} "
                                f"(> {PARITY_ATOL:g})")
            key = f"{fmt}-{precision}"
            outputs[key] = path
            artifacts.append(ok_artifact(fmt, precision, path, ctx.run_dir, parity))
            ctx.console.print(f"  {fmt} {precision}: {path.stat().st_size / 2**20:.1f} MiB, next-token logits max "
                              f"|Δ| {diff:.1e} from PyTorch, greedy tokens {same:.0%} the same")
    if not outputs:
        raise StageFailed("no artifact was exported: " + "; ".join(a["error"] for a in artifacts))
    feeding = {"input": "token ids of the prompt through the tokenizer's chat template (the template and the stop id "
                        "are in the artifact's metadata: chat_template, eos_token_id)",
               **{f"generation ({fmt})": DECODER[fmt].feeding for fmt in cfg.formats},
               "stop": f"token id {tokenizer.eos_token_id} ({tokenizer.eos_token!r})"}
    return StageResult(outputs=outputs, metrics={"artifacts": artifacts, "preprocessing": feeding},
                       warnings=warnings)
