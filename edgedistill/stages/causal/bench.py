"""Causal-LM bench stage: each exported decoder generates on the target through the runner's generation mode:
time to first token on a prompt of bench.prompt_tokens, decode tokens per second, peak memory, and its greedy
answers to the graded held-out prompts, graded here (what the model can still do on the device's runtime)."""

from __future__ import annotations

import json

import numpy as np

from edgedistill.bench.local import BenchFailed
from edgedistill.bench.targets import get_target
from edgedistill.fileio import atomic_output, atomic_write_json
from edgedistill.lm.causal import rouge_l
from edgedistill.lm.chat import chat_ids, load_causal, stop_ids
from edgedistill.lm.instructions import scores
from edgedistill.pipeline.engine import StageResult
from edgedistill.stages.bench import bench_cell, emulation_cpu
from edgedistill.stages.causal.teacher import load_prompts

MAX_ANSWER_IDS = 1 << 20  # tokens a runner's answers may hold in all, before they are believed


def run(spec, ctx) -> StageResult:
    cfg = spec.bench
    out = ctx.stage_dir("bench")
    model, tokenizer = load_causal(ctx.output("distill", "config").parent)
    _, evaluation = load_prompts(ctx)
    prompt_ids = [chat_ids(tokenizer, p.text) for p in evaluation]
    prompts_npz = out / "prompts.npz"
    with atomic_output(prompts_npz) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.array([t for p in prompt_ids for t in p], dtype=np.int32),
                 offsets=np.cumsum([0] + [len(p) for p in prompt_ids]), new_tokens=np.array(spec.data.answer_tokens),
                 stop_ids=np.array(sorted(stop_ids(model, tokenizer))))
    reference = json.loads(ctx.output("teacher", "answers").read_text())["ids"]
    target = get_target(cfg.target, ctx.device)
    threads = target.threads(ctx.device, cfg.threads)
    where = target.describe(ctx.device, threads) + f", prompt of {cfg.prompt_tokens} tokens"
    measured_on = target.evidence(ctx.device)
    arm_cpu = emulation_cpu(cfg.emulate, ctx.device, False)  # before any work: `on` without a CPU stops here
    cells, warnings, outputs = [], [], {"prompts": prompts_npz}
    for artifact in ctx.metrics("export").get("artifacts", []):
        key = f"{artifact['format']}-{artifact['requested_precision']}"
        cell = bench_cell(artifact, where, measured_on, None)
        if artifact.get("status") != "ok":
            cells.append({**cell, "status": "skipped", "error": "not exported"})
            continue
        try:
            with ctx.console.status(f"  generating with {artifact['format']} {artifact['precision']} on "
                                    f"{threads} thread(s)…"):
                result = target.run(ctx.device, ctx.output("export", key), prompts_npz, threads=threads,
                                warmup_runs=1, warmup_s=0, runs=cfg.runs, min_time_s=0, timeout_s=cfg.timeout_s,
                                trust_new_host=cfg.trust_new_host, ssh_config=ctx.ssh_config,
                                seq_len=cfg.prompt_tokens)
            answers = checked_answers(result, len(evaluation))
        except BenchFailed as exc:
            cells.append({**cell, "status": "failed", "error": str(exc)})
            warnings.append(f"{key}: benchmark failed: {exc}")
            continue
        path = out / f"{key}.json"
        atomic_write_json(path, result)
        outputs[key] = path
        texts = [tokenizer.decode(a, skip_special_tokens=True) for a in answers]
        graded = scores(evaluation, texts)
        gen = result["generation"]
        agreement = {"exact_match": float(np.mean([a == r for a, r in zip(answers, reference)])),
                     "rouge_l": float(np.mean([rouge_l(a, r) for a, r in zip(answers, reference)]))}
        ctx.console.print(f"  {artifact['format']} {artifact['precision']}: time to first token "
                          f"{gen['ttft_ms']['p50']:.1f} ms ({gen['prompt_tokens']} tokens), "
                          f"{gen['decode_tokens_per_s']:.1f} tokens/s, peak RSS {result['peak_rss_mb']:.0f} MB, "
                          f"graded {graded['all']:.0%}")
        cells.append({**cell, "status": "ok", "latency_ms": result["latency_ms"], "accuracy": graded["all"],
                      "scores": graded, "agreement": agreement, "generation": gen, "answers": texts,
                      "peak_rss_mb": result["peak_rss_mb"], "init_ms": result["init_ms"], "threads": threads,
                      "samples_ms": result.get("samples_ms", []), "runtime": result["runtime"],
                      "device": result["device"]})
    if arm_cpu is not None:
        student_answers = json.loads(ctx.output("distill", "answers").read_text())["ids"]
        emulate_generation(ctx, arm_cpu, prompt_ids, student_answers, min(EMULATED_TOKENS, spec.data.answer_tokens),
                           stop_ids(model, tokenizer), cells, warnings, spec.bench.timeout_s)
    return StageResult(outputs=outputs, metrics={"cells": cells, "target": where, "emulated_cpu": arm_cpu,
                                                 "latency_unit": "ms per generated token"}, warnings=warnings)


EMULATED_PROMPTS, EMULATED_TOKENS = 4, 16  # under qemu a token of a 60 M-parameter model takes about a second
EMULATED_RUNNER_ARGS = ["--threads", "1", "--runs", "1", "--warmup-runs", "0", "--warmup-s", "0", "--min-time-s", "0",
                        "--seq-len", "8"]


def emulate_generation(ctx, cpu: str, prompt_ids: list[list[int]], reference: list[list[int]], new_tokens: int,
                       stops: set, cells: list[dict], warnings: list[str], timeout_s: float) -> None:
    """Each artifact's greedy answers (`new_tokens` at most) to the first EMULATED_PROMPTS held-out prompts on the
    device's ARM CPU under qemu, token by token against the PyTorch student's: the ARM kernels' agreement (`arm`
    in its cell)."""
    import tempfile
    from pathlib import Path

    from edgedistill.bench import emulated
    from edgedistill.errors import UserError

    prompts = prompt_ids[:EMULATED_PROMPTS]
    want = [r[:new_tokens] for r in reference[:EMULATED_PROMPTS]]
    for cell in cells:
        if cell.get("status") != "ok":
            continue
        key = f"{cell['format']}-{cell['requested_precision']}"
        try:
            with tempfile.TemporaryDirectory(prefix="edgedistill-arm-") as work, \
                    ctx.console.status(f"  {cell['format']} {cell['precision']} generating on emulated {cpu}…"):
                npz = Path(work) / "prompts.npz"
                np.savez(npz, ids=np.array([t for p in prompts for t in p], dtype=np.int32),
                         offsets=np.cumsum([0] + [len(p) for p in prompts]), new_tokens=np.array(new_tokens),
                         stop_ids=np.array(sorted(stops)))
                result = emulated.run_emulated(ctx.output("export", key), npz, cpu=cpu,
                                               runner_args=EMULATED_RUNNER_ARGS, timeout_s=timeout_s)
            got = checked_answers(result, len(prompts))
        except (BenchFailed, UserError) as exc:  # UserError: the userland could not be built (tools, network)
            cell["arm"] = {"cpu": cpu, "status": "failed", "error": str(exc)}
            warnings.append(f"{key}: emulated {cpu}: {exc}")
            continue
        same = sum(a == b for g, w in zip(got, want) for a, b in zip(g, w))
        total = sum(max(len(g), len(w)) for g, w in zip(got, want))
        cell["arm"] = {"status": "ok", "cpu": cpu, "machine": result["device"].get("machine"),
                       "target": result["target"], "qemu": result["emulated"]["qemu"],
                       "timing": result["emulated"]["timing"], "samples": len(prompts), "tokens": total,
                       "top1_agreement": same / max(1, total), "accuracy": None,
                       "exact_answers": sum(g == w for g, w in zip(got, want)) / len(prompts)}
        ctx.console.print(f"  {cell['format']} {cell['precision']} on emulated {cpu}: {same}/{total} greedy tokens "
                          f"the PyTorch student's ({len(prompts)} prompts)")


def checked_answers(result: dict, prompts: int) -> list[list[int]]:
    """The runner's greedy answers, if they are what was asked: one list of token ids per prompt."""
    answers, gen = result.get("answers"), result.get("generation")
    if not isinstance(gen, dict) or not all(isinstance(gen.get(k), (int, float)) and gen[k] >= 0
                                            for k in ("prompt_tokens", "new_tokens", "decode_tokens_per_s")):
        raise BenchFailed("the runner's answer has no generation figures; is this model a KV-cache decoder?")
    if not isinstance(answers, list) or len(answers) != prompts:
        raise BenchFailed(f"the runner answered {len(answers) if isinstance(answers, list) else 'no'} prompts "
                          f"of {prompts}")
    if not all(isinstance(a, list) and all(isinstance(t, int) and 0 <= t < 2**31 for t in a) for a in answers) \
            or sum(map(len, answers)) > MAX_ANSWER_IDS:
        raise BenchFailed("the runner's answers are not lists of token ids")
    return answers
