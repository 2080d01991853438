"""Causal-LM distill stage: sequence-level KD on the teacher's greedy answers to the training prompts (all, or
those their graders accept), plus token-level KD on its top-k logits over those answers (both cached on disk by
digest), then optional on-policy rounds on the student's own answers; then the student's graded scores,
agreement with the teacher and perplexity on the held-out prompts."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import torch

from edgedistill.distill.cache import read_entry, weights_digest, write_entry
from edgedistill.distill.compute import Compute, resolve
from edgedistill.errors import StageFailed
from edgedistill.fileio import cache_root, sha256_json
from edgedistill.lm.causal import CausalTrainConfig, rouge_l, teacher_topk, train_causal
from edgedistill.lm.chat import answer_batch, answer_perplexity, chat_ids, greedy_answers, load_causal, save_causal
from edgedistill.lm.instructions import Prompt, kept, passes, scores
from edgedistill.pipeline.engine import StageResult
from edgedistill.stages.causal.teacher import load_prompts, teacher_folder

TOPK_BATCH = 4  # sequences per teacher pass for the top-k cache: a full-vocabulary logit tensor each


def run(spec, ctx) -> StageResult:
    cfg = spec.distill
    teacher, tokenizer = load_causal(teacher_folder(spec))
    student, _ = load_causal(ctx.output("student", "config").parent)
    training, evaluation = load_prompts(ctx)
    eval_ids = [chat_ids(tokenizer, p.text) for p in evaluation]
    reference = json.loads(ctx.output("teacher", "answers").read_text())["ids"]
    before = graded(student, tokenizer, evaluation, eval_ids, spec.data.answer_tokens, "student before", ctx.console)
    taught = teach(student, teacher, tokenizer, training, cfg, spec.data.answer_tokens, spec.seed,
                   resolve(spec.train.device, spec.train.precision), ctx.console)
    after = graded(student, tokenizer, evaluation, eval_ids, spec.data.answer_tokens, "student after", ctx.console)
    held_ids, held_targets = answer_batch(eval_ids, reference, tokenizer.pad_token_id, cfg.max_length)
    agreement = {"exact_match": float(np.mean([a == r for a, r in zip(after["ids"], reference)])),
                 "rouge_l": float(np.mean([rouge_l(a, r) for a, r in zip(after["ids"], reference)]))}
    perplexity = {"student": answer_perplexity(student, held_ids, held_targets),
                  "teacher": answer_perplexity(teacher, held_ids, held_targets)}
    out = ctx.stage_dir("distill")
    outputs = save_causal(student, tokenizer, out / "model")
    # Both sets of graded answers: what the exported artifacts answer can be told apart from either.
    (out / "answers.json").write_text(json.dumps({"ids": after["ids"], "texts": after["texts"],
                                                  "undistilled_ids": before["ids"]}))
    outputs["answers"] = out / "answers.json"
    kept_share = kept(after["scores"], ctx.metrics("teacher")["scores"])
    ctx.console.print("  student graded scores " + ", ".join(f"{k} {v:.0%}" for k, v in before["scores"].items())
                      + " → " + ", ".join(f"{k} {v:.0%}" for k, v in after["scores"].items())
                      + f"; greedy agreement with the teacher: exact {agreement['exact_match']:.0%}, ROUGE-L "
                      f"{agreement['rouge_l']:.2f}; perplexity of the teacher's held-out answers "
                      f"{perplexity['student']:.2f} (teacher {perplexity['teacher']:.2f})")
    return StageResult(outputs=outputs, metrics={
        "accuracy": after["scores"]["all"], "scores": after["scores"], "kept": kept_share,
        "undistilled": before["scores"], "agreement": agreement, "perplexity": perplexity, "epochs": cfg.epochs,
        **taught})


def teach(student, teacher, tokenizer, training: list[Prompt], cfg, answer_tokens: int, seed: int,
          compute: Compute, console) -> dict:
    """Train `student` on the teacher (distill's config `cfg`): sequence-level KD on the teacher's answers to the
    training prompts (all, or those their graders accept), token-level KD on its top-k logits there, then the
    on-policy rounds. What was done, for the stage's metrics."""
    train_ids = [chat_ids(tokenizer, p.text) for p in training]
    answers, cache_status = teacher_answers(teacher, tokenizer, train_ids, answer_tokens, weights_digest(teacher),
                                            console)
    chosen = list(range(len(training)))
    if cfg.answers == "correct":
        chosen = [i for i in chosen if passes(training[i], tokenizer.decode(answers[i], skip_special_tokens=True))]
        if not chosen:
            raise StageFailed(f"distill.answers correct: the grader accepts none of the teacher's {len(training)} "
                              "training answers; set answers: all")
    pad = tokenizer.pad_token_id
    ids, targets = answer_batch([train_ids[i] for i in chosen], [answers[i] for i in chosen], pad, cfg.max_length)
    topk = None
    if cfg.alpha > 0:
        with console.status(f"  the teacher's top-{cfg.top_k} logits on {len(ids)} answers…"):
            topk = teacher_topk(teacher, ids, cfg.top_k, batch_size=TOPK_BATCH)
    trained = train_causal(student, ids, CausalTrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, alpha=cfg.alpha, temperature=cfg.temperature,
        divergence=cfg.divergence), topk=topk, targets=targets, seed=seed, label="distilling", console=console,
        compute=compute)
    history, seconds = trained.history, trained.seconds
    on_policy = cfg.on_policy
    rng = random.Random(seed)
    for r in range(on_policy.rounds):
        picked = rng.sample(range(len(train_ids)), min(on_policy.prompts, len(train_ids)))
        prompts = [train_ids[i] for i in picked]
        started = time.perf_counter()
        torch.manual_seed(seed + 1 + r)
        own = greedy_answers(student, tokenizer, prompts, answer_tokens, label=f"on-policy {r + 1}: student answers",
                             console=console, sample_temperature=on_policy.temperature)
        own_ids, own_targets = answer_batch(prompts, own, pad, cfg.max_length)
        round_trained = train_causal(student, own_ids, CausalTrainConfig(
            epochs=1, batch_size=cfg.batch_size, lr=on_policy.lr or cfg.lr, alpha=1.0, divergence=on_policy.divergence),
            teacher=teacher, targets=own_targets, seed=seed + 1 + r, label=f"on-policy {r + 1}: distilling",
            console=console, compute=compute)
        history += [{**h, "epoch": len(history) + 1, "on_policy_round": r + 1} for h in round_trained.history]
        seconds += time.perf_counter() - started
    terms = ["teacher answers (sequence-level KD)"] * (cfg.alpha < 1) + [f"top-{cfg.top_k} logits"] * (cfg.alpha > 0)
    terms += [f"on-policy ({on_policy.rounds} rounds of {on_policy.prompts} student answers, "
              f"{on_policy.divergence})"] * (on_policy.rounds > 0)
    return {"terms": terms, "history": history, "seconds": round(seconds, 3), "train_sequences": len(ids),
            "answers": cfg.answers, "answers_kept": f"{len(chosen)} of {len(training)}",
            "compute": compute.describe(), "divergence": cfg.divergence, "temperature": cfg.temperature,
            "alpha": cfg.alpha, "teacher_cache": f"answers: {cache_status}; top-k: {topk.status if topk else 'off'}"}


def teacher_answers(teacher, tokenizer, prompts: list[list[int]], max_new_tokens: int, digest: str,
                    console) -> tuple[list[list[int]], str]:
    """The teacher's greedy answers to the training prompts, kept in the cache under the digests of its
    weights, the prompts and the answer length (they take minutes for a real teacher)."""
    key = sha256_json({"weights": digest, "prompts": prompts, "new_tokens": max_new_tokens})[:32]
    folder = cache_root() / "answers" / key
    if read_entry(folder)[0] is not None:
        flat, offsets = np.load(folder / "ids.npy"), np.load(folder / "offsets.npy")
        return [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])], "hit"
    answers = greedy_answers(teacher, tokenizer, prompts, max_new_tokens, label="teacher answers (training)",
                             console=console)
    offsets = np.cumsum([0] + [len(a) for a in answers])
    try:
        write_entry(folder, {"ids.npy": np.array([t for a in answers for t in a], dtype=np.int64),
                             "offsets.npy": offsets}, {"prompts": len(prompts), "new_tokens": max_new_tokens})
    except OSError as exc:
        return answers, f"miss, not stored ({exc.strerror or exc})"
    return answers, "miss"


def graded(model, tokenizer, prompts, prompt_ids, new_tokens: int, label: str, console) -> dict:
    ids = greedy_answers(model, tokenizer, prompt_ids, new_tokens, label=label, console=console)
    texts = [tokenizer.decode(a, skip_special_tokens=True) for a in ids]
    return {"ids": ids, "texts": texts, "scores": scores(prompts, texts)}
