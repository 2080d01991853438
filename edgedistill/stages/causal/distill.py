"""Causal-LM distill stage: sequence-level KD on the teacher's greedy answers to the training prompts, plus
token-level KD on its top-k logits over those answers (both cached on disk by digest), then the student's
graded scores, agreement with the teacher and perplexity on the held-out prompts."""

from __future__ import annotations

import json

import numpy as np

from edgedistill.distill.cache import read_entry, weights_digest, write_entry
from edgedistill.distill.compute import resolve
from edgedistill.fileio import cache_root, sha256_json
from edgedistill.lm.causal import CausalTrainConfig, rouge_l, teacher_topk, train_causal
from edgedistill.lm.chat import answer_batch, answer_perplexity, chat_ids, greedy_answers, load_causal, save_causal
from edgedistill.lm.instructions import scores
from edgedistill.pipeline.engine import StageResult
from edgedistill.stages.causal.teacher import load_prompts, teacher_folder

TOPK_BATCH = 4  # sequences per teacher pass for the top-k cache: a full-vocabulary logit tensor each


def run(spec, ctx) -> StageResult:
    cfg = spec.distill
    teacher, tokenizer = load_causal(teacher_folder(spec))
    student, _ = load_causal(ctx.output("student", "config").parent)
    training, evaluation = load_prompts(ctx)
    train_ids = [chat_ids(tokenizer, p.text) for p in training]
    eval_ids = [chat_ids(tokenizer, p.text) for p in evaluation]
    reference = json.loads(ctx.output("teacher", "answers").read_text())["ids"]
    digest = weights_digest(teacher)
    answers, cache_status = teacher_answers(teacher, tokenizer, train_ids, spec.data.answer_tokens, digest, ctx)
    pad = tokenizer.pad_token_id
    ids, targets = answer_batch(train_ids, answers, pad, cfg.max_length)
    topk = None
    if cfg.alpha > 0:
        with ctx.console.status(f"  the teacher's top-{cfg.top_k} logits on {len(ids)} answers…"):
            topk = teacher_topk(teacher, ids, cfg.top_k, batch_size=TOPK_BATCH)
    before = graded(student, tokenizer, evaluation, eval_ids, spec.data.answer_tokens, "student before", ctx)
    compute = resolve(spec.train.device, spec.train.precision)
    trained = train_causal(student, ids, CausalTrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, alpha=cfg.alpha, temperature=cfg.temperature,
        divergence=cfg.divergence), topk=topk, targets=targets, seed=spec.seed, label="distilling",
        console=ctx.console, compute=compute)
    after = graded(student, tokenizer, evaluation, eval_ids, spec.data.answer_tokens, "student after", ctx)
    held_ids, held_targets = answer_batch(eval_ids, reference, pad, cfg.max_length)
    agreement = {"exact_match": float(np.mean([a == r for a, r in zip(after["ids"], reference)])),
                 "rouge_l": float(np.mean([rouge_l(a, r) for a, r in zip(after["ids"], reference)]))}
    perplexity = {"student": answer_perplexity(student, held_ids, held_targets),
                  "teacher": answer_perplexity(teacher, held_ids, held_targets)}
    out = ctx.stage_dir("distill")
    outputs = save_causal(student, tokenizer, out / "model")
    (out / "answers.json").write_text(json.dumps({"ids": after["ids"], "texts": after["texts"]}))
    outputs["answers"] = out / "answers.json"
    kept = {k: after["scores"][k] / v if v else None for k, v in ctx.metrics("teacher")["scores"].items()}
    ctx.console.print("  student graded scores " + ", ".join(f"{k} {v:.0%}" for k, v in before["scores"].items())
                      + " → " + ", ".join(f"{k} {v:.0%}" for k, v in after["scores"].items())
                      + f"; greedy agreement with the teacher: exact {agreement['exact_match']:.0%}, ROUGE-L "
                      f"{agreement['rouge_l']:.2f}; perplexity of the teacher's held-out answers "
                      f"{perplexity['student']:.2f} (teacher {perplexity['teacher']:.2f})")
    terms = ["teacher answers (sequence-level KD)"] * (cfg.alpha < 1) + [f"top-{cfg.top_k} logits"] * (cfg.alpha > 0)
    return StageResult(outputs=outputs, metrics={
        "accuracy": after["scores"]["all"], "scores": after["scores"], "kept": kept, "undistilled": before["scores"],
        "agreement": agreement, "perplexity": perplexity, "epochs": cfg.epochs, "terms": terms,
        "history": trained.history, "seconds": round(trained.seconds, 3), "train_sequences": len(ids),
        "compute": compute.describe(), "divergence": cfg.divergence, "temperature": cfg.temperature,
        "alpha": cfg.alpha,
        "teacher_cache": f"answers: {cache_status}; top-k: {topk.status if topk else 'off'}"})


def teacher_answers(teacher, tokenizer, prompts: list[list[int]], max_new_tokens: int, digest: str,
                    ctx) -> tuple[list[list[int]], str]:
    """The teacher's greedy answers to the training prompts, kept in the cache under the digests of its
    weights, the prompts and the answer length (they take minutes for a real teacher)."""
    key = sha256_json({"weights": digest, "prompts": prompts, "new_tokens": max_new_tokens})[:32]
    folder = cache_root() / "answers" / key
    if read_entry(folder)[0] is not None:
        flat, offsets = np.load(folder / "ids.npy"), np.load(folder / "offsets.npy")
        return [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])], "hit"
    answers = greedy_answers(teacher, tokenizer, prompts, max_new_tokens, label="teacher answers (training)",
                             console=ctx.console)
    offsets = np.cumsum([0] + [len(a) for a in answers])
    try:
        write_entry(folder, {"ids.npy": np.array([t for a in answers for t in a], dtype=np.int64),
                             "offsets.npy": offsets}, {"prompts": len(prompts), "new_tokens": max_new_tokens})
    except OSError as exc:
        return answers, f"miss, not stored ({exc.strerror or exc})"
    return answers, "miss"


def graded(model, tokenizer, prompts, prompt_ids, new_tokens: int, label: str, ctx) -> dict:
    ids = greedy_answers(model, tokenizer, prompt_ids, new_tokens, label=label, console=ctx.console)
    texts = [tokenizer.decode(a, skip_special_tokens=True) for a in ids]
    return {"ids": ids, "texts": texts, "scores": scores(prompts, texts)}
