"""Sentence encoders to ONNX (dynamic batch and sequence length) and TFLite (int32 tokens, fixed length),
and their embeddings from the runtimes, for parity and evaluation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from edgedistill.fileio import atomic_output
from edgedistill.lm.encoder import SentenceEncoder

INPUTS = ["input_ids", "attention_mask"]


def encoder_to_onnx(model, path: Path, *, opset: int = 17, metadata: dict | None = None) -> Path:
    """Export (input_ids, attention_mask) -> embedding with dynamic batch and sequence axes."""
    import onnx

    from edgedistill.export.onnx import require_onnx, set_metadata

    require_onnx()
    wrapper = SentenceEncoder(model).eval()
    sample = (torch.ones(1, 16, dtype=torch.long), torch.ones(1, 16, dtype=torch.long))
    with atomic_output(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, sample, str(tmp), input_names=INPUTS, output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"}, "embedding": {0: "batch"}},
                          opset_version=opset, dynamo=False)
        onnx.checker.check_model(onnx.load(str(tmp)))
    set_metadata(path, {"producer": "edgedistill", "task": "sentence-embedding", **(metadata or {})})
    return path


class Int32Encoder(torch.nn.Module):
    """Takes int32 tokens, what LiteRT's embedding lookup wants."""

    def __init__(self, model):
        super().__init__()
        self.encoder = SentenceEncoder(model)

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids.long(), attention_mask.long())


def encoder_to_tflite(model, path: Path, *, seq_len: int, metadata: dict | None = None) -> Path:
    """Convert with litert-torch at a fixed sequence length; tokens go in as int32."""
    from edgedistill.export.tflite import convert
    from edgedistill.quiet import quiet

    sample = (torch.ones(1, seq_len, dtype=torch.int32), torch.ones(1, seq_len, dtype=torch.int32))
    with quiet():
        return convert(Int32Encoder(model), sample, path, metadata={
            "producer": "edgedistill", "task": "sentence-embedding", "seq_len": seq_len, **(metadata or {})})


def onnx_embed(path: Path, tokenizer, texts: list[str], *, max_length: int = 128, batch_size: int = 64) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                          return_tensors="np")
        out.append(session.run(None, {k: batch[k].astype(np.int64) for k in INPUTS})[0])
    return np.concatenate(out)


def tflite_embed(path: Path, tokenizer, texts: list[str], *, seq_len: int) -> np.ndarray:
    """One sentence at a time, padded or truncated to the model's fixed length."""
    from ai_edge_litert.interpreter import Interpreter

    from edgedistill.quiet import quiet

    with quiet():  # LiteRT announces its CPU delegate on the raw stderr
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    details = {d["name"]: d for d in interpreter.get_input_details()}
    ids_detail, mask_detail = sorted(details.values(), key=lambda d: d["index"])[:2]
    out_index = interpreter.get_output_details()[0]["index"]
    rows = []
    for text in texts:
        batch = tokenizer([text], padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
        interpreter.set_tensor(ids_detail["index"], batch["input_ids"].astype(np.int32))
        interpreter.set_tensor(mask_detail["index"], batch["attention_mask"].astype(np.int32))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out_index)[0].copy())
    return np.stack(rows)
