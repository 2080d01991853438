"""Encoder teacher stage: the Hugging Face teacher from its local folder, and its held-out embeddings,
the reference every later measure is taken against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgedistill.fileio import atomic_output, atomic_write_json, sha256_file
from edgedistill.lm.encoder import default_teacher_dir, describe, embed, load_encoder
from edgedistill.lm.text import load_texts
from edgedistill.pipeline.engine import StageResult

METRIC = "mean cosine to the teacher"


def teacher_dir(spec) -> Path:
    return default_teacher_dir() if spec.teacher.path == "bundled" else Path(spec.teacher.path)


def run(spec, ctx) -> StageResult:
    folder = teacher_dir(spec)
    model, tokenizer = load_encoder(folder)
    texts = load_texts(spec.data, spec.seed)
    out = ctx.stage_dir("teacher")
    with ctx.console.status(f"  teacher embeddings of {len(texts.test)} held-out sentences…"):
        reference = embed(model, tokenizer, texts.test, max_length=spec.distill.max_length).numpy()
    with atomic_output(out / "test-embeddings.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, reference)
    # The teacher stays in its folder; this records which one, by the digests of its files.
    files = sorted(p for p in folder.iterdir() if p.is_file())
    atomic_write_json(out / "teacher.json", {"folder": str(folder), "files": {p.name: sha256_file(p) for p in files}})
    metrics = {**describe(model), "source": "huggingface", "folder": str(folder), "accuracy": 1.0, "metric": METRIC,
               "train_texts": len(texts.train), "test_texts": len(texts.test),
               "documents": {"train": texts.documents[0], "test": texts.documents[1]}}
    ctx.console.print(f"  teacher {metrics['arch']}: {metrics['params']:,} params; {len(texts.train):,} training and "
                      f"{len(texts.test)} held-out sentences")
    return StageResult(outputs={"teacher": out / "teacher.json", "test_embeddings": out / "test-embeddings.npy"},
                       metrics=metrics)
