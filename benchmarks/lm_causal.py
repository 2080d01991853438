"""A tiny GPT-2 teacher trained here, and a 2-layer student of it trained with and without KD.

Text: the standard library's docstrings and the pydoc topics (both bundled with Python), prose sentences,
split by document (10 % of documents held out). A byte-level BPE tokenizer (1,024 tokens) is learned on
the training documents. Teacher: GPT-2 config, 4 layers, hidden 128, context 64, trained from scratch.
Students: 2 of its 4 blocks (uniform), initialized from them, then trained the same number of epochs at
the same learning rate on the same blocks, either on next-token cross-entropy alone or with KD from the
teacher's top-k logits (cached on disk; alpha, temperature and k below).

Measures on held-out text: perplexity, next-token agreement with the teacher, and agreement of greedy
continuations of held-out prompts with the teacher's (exact match and ROUGE-L on tokens).
Writes benchmarks/results/lm_causal.json and the table in benchmarks/README.md.
Usage: python benchmarks/lm_causal.py [--teacher-epochs 6] [--epochs 3] [--alpha 0.5] [--top-k 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from _readme import update_section

from edgedistill.lm.causal import (
    CausalTrainConfig,
    generation_agreement,
    layer_dropped_gpt2,
    next_token_agreement,
    perplexity,
    teacher_topk,
    tiny_gpt2,
    token_blocks,
    train_causal,
    train_tokenizer,
)
from edgedistill.lm.text import bundled_documents, split_by_document, stdlib_documents

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "lm_causal.json"


def measures(model, teacher, test_blocks, prompts) -> dict:
    return {"perplexity": perplexity(model, test_blocks),
            "next_token_agreement": next_token_agreement(model, teacher, test_blocks),
            "generation": generation_agreement(model, teacher, prompts, new_tokens=16)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    splits = split_by_document({**bundled_documents(), **stdlib_documents()}, test_fraction=0.1, seed=0)
    tokenizer = train_tokenizer(splits.train, vocab_size=1024)
    context = 64
    train_blocks = token_blocks(tokenizer, splits.train, context)
    test_blocks = token_blocks(tokenizer, splits.test, context)
    prompts = [block[:16] for block in test_blocks[:args.prompts]]
    teacher = tiny_gpt2(len(tokenizer), layers=4, hidden=128, heads=4, context=context)
    summary = {"benchmark": "lm_causal", "date": time.strftime("%Y-%m-%d"), "vocab": len(tokenizer),
               "train_tokens": train_blocks.numel(), "test_tokens": test_blocks.numel(),
               "documents": {"train": splits.documents[0], "test": splits.documents[1]}, "args": vars(args)}
    trained = train_causal(teacher, train_blocks, CausalTrainConfig(epochs=args.teacher_epochs, lr=args.lr),
                           label="teacher")
    summary["teacher"] = {"params": sum(p.numel() for p in teacher.parameters()), "layers": 4,
                          "perplexity": perplexity(teacher, test_blocks), "seconds": trained.seconds}
    with tempfile.TemporaryDirectory() as cache:
        topk = teacher_topk(teacher, train_blocks, args.top_k, root=Path(cache))
        again = teacher_topk(teacher, train_blocks, args.top_k, root=Path(cache))
        summary["topk_cache"] = {"first": topk.status, "second": again.status,
                                 "mb": (topk.values.nbytes + topk.indices.nbytes) / 2**20}
        undistilled, kept = layer_dropped_gpt2(teacher, 2)
        summary["kept"] = kept
        summary["students"] = {"layer-dropped, not trained": measures(undistilled, teacher, test_blocks, prompts)}
        for label, alpha in (("trained without KD", 0.0), (f"trained with top-{args.top_k} KD", args.alpha)):
            student, _ = layer_dropped_gpt2(teacher, 2)
            cfg = CausalTrainConfig(epochs=args.epochs, lr=args.lr, alpha=alpha, temperature=args.temperature)
            run = train_causal(student, train_blocks, cfg, topk=again if alpha > 0 else None, label=label)
            summary["students"][label] = {**measures(student, teacher, test_blocks, prompts), "seconds": run.seconds,
                                          "history": run.history}
        summary["student_params"] = sum(p.numel() for p in student.parameters())
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    _update_readme(summary)
    print(json.dumps({k: {m: v.get(m) for m in ("perplexity", "next_token_agreement", "generation")}
                      for k, v in summary["students"].items()}, indent=1))


def _update_readme(s: dict) -> None:
    a = s["args"]
    rows = [f"Teacher: GPT-2 config, 4 layers, hidden 128, {s['teacher']['params']:,} params, trained here "
            f"{a['teacher_epochs']} epochs on {s['train_tokens']:,} tokens ({s['documents']['train']} documents of "
            f"stdlib docstrings and pydoc topics; byte-level BPE, {s['vocab']} tokens); held-out perplexity "
            f"{s['teacher']['perplexity']:.2f}. Students: blocks {s['kept']} of the teacher ({s['student_params']:,} "
            f"params), {a['epochs']} epochs, lr {a['lr']:g}; KD: alpha {a['alpha']:g}, T {a['temperature']:g}, from "
            f"the teacher's cached top-{a['top_k']} logits ({s['topk_cache']['mb']:.0f} MB on disk; second read: "
            f"{s['topk_cache']['second']}). Held-out: {s['test_tokens']:,} tokens from {s['documents']['test']} other "
            f"documents; {s['students']['trained without KD']['generation']['prompts']} prompts of 16 tokens, "
            f"16 greedy tokens each; {s['date']}.", "",
            "| student | perplexity | next-token agreement | generation exact match | generation ROUGE-L |",
            "|---|---|---|---|---|"]
    for label, m in s["students"].items():
        rows.append(f"| {label} | {m['perplexity']:.2f} | {m['next_token_agreement']:.1%} | "
                    f"{m['generation']['exact_match']:.1%} | {m['generation']['rouge_l']:.3f} |")
    update_section("lm_causal", "## Causal LM distillation\n\n`python benchmarks/lm_causal.py` (needs the `lm` extra)",
                   rows)


if __name__ == "__main__":
    main()
