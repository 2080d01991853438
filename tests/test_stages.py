"""Each stage on the tiny digits pipeline, run once for the module through the real engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from edgedistill.config.device import load_device
from edgedistill.config.pipeline import load_pipeline
from edgedistill.pipeline.engine import run_pipeline
from edgedistill.stages import default_stages
from tests.conftest import tiny_pipeline_dict, write_pipeline


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    spec = load_pipeline(write_pipeline(folder / "tiny.yaml", tiny_pipeline_dict(distill={"baseline": "scratch"})))
    run_dir = folder / "run"
    manifest = run_pipeline(spec, load_device(spec.device), default_stages(), run_dir,
                            console=Console(file=open("/dev/null", "w")))
    return run_dir, manifest


def test_every_stage_completes(tiny_run):
    _, manifest = tiny_run
    assert {n: r.status for n, r in manifest.stages.items()} == dict.fromkeys(
        ["teacher", "student", "distill", "export", "bench", "report"], "completed")


def test_teacher_stage(tiny_run):
    run_dir, manifest = tiny_run
    m = manifest.stages["teacher"].metrics
    assert m["source"] == "train" and m["params"] > 1000 and len(m["history"]) == 2
    assert 0.1 < m["accuracy"] <= 1  # above chance after two epochs on real digits
    arch = json.loads((run_dir / "teacher" / "arch.json").read_text())
    assert arch["input_hw"] == [8, 8] and arch["class_names"] == [str(i) for i in range(10)]


def test_student_is_smaller_than_teacher(tiny_run):
    _, manifest = tiny_run
    m = manifest.stages["student"].metrics
    assert m["params"] < manifest.stages["teacher"].metrics["params"]
    assert m["param_ratio"] == pytest.approx(m["params"] / manifest.stages["teacher"].metrics["params"])


def test_distill_keeps_best_checkpoint_and_history(tiny_run):
    run_dir, manifest = tiny_run
    m = manifest.stages["distill"].metrics
    assert m["best_epoch"] in (1, 2) and len(m["history"]) == 2
    assert m["val_accuracy"] == pytest.approx(max(h["val_accuracy"] for h in m["history"]), abs=1e-6)
    assert (run_dir / "distill" / "best.safetensors").exists()


def test_a_scratch_baseline_measures_what_distilling_gained(tiny_run):
    run_dir, manifest = tiny_run
    m = manifest.stages["distill"].metrics
    base = m["baseline"]
    assert base["kind"] == "scratch" and 0 <= base["accuracy"] <= 1 and base["epochs"] == m["epochs"]
    assert base["gain"] == pytest.approx(m["distilled_accuracy"] - base["accuracy"])
    # The later stages got the student that validated higher (distill.ship: best), and the stage says which.
    scratch_won = base["val_accuracy"] > m["val_accuracy"]
    assert m["shipped"] == ("scratch" if scratch_won else "distilled")
    assert m["accuracy"] == (base["accuracy"] if scratch_won else m["distilled_accuracy"])
    results = json.loads((run_dir / "report" / "results.json").read_text())
    assert results["distillation"]["baseline"]["accuracy"] == base["accuracy"]
    sentence = "Distillation gained" if base["gain"] > 0 else "Distillation did not help here"
    for name in ("report.md", "report.html"):
        assert sentence in (run_dir / "report" / name).read_text()


def test_the_baseline_sentence_says_when_distillation_did_not_help():
    from edgedistill.report.text import baseline_sentence

    lost = baseline_sentence({"baseline": {"accuracy": 0.984, "gain": -0.011}, "shipped": "distilled",
                              "ship": "distilled"})
    assert lost.startswith("Distillation did not help here (-1.10 points)") and "98.40%" in lost and "97.30%" in lost
    assert "distill.ship: best or scratch, then edgedistill run --resume" in lost  # the command behind the advice
    validated = baseline_sentence({"baseline": {"accuracy": 0.984, "gain": -0.011}, "shipped": "distilled",
                                   "ship": "best"})
    assert validated.endswith("The distilled student validated higher, so it shipped; distill.ship: scratch ships "
                              "the other.")
    shipped = baseline_sentence({"baseline": {"accuracy": 0.984, "gain": -0.011}, "shipped": "scratch", "ship": "best"})
    assert "The scratch student is the one exported and benchmarked (it validated higher" in shipped
    gained = baseline_sentence({"baseline": {"accuracy": 0.9, "gain": 0.02}})
    assert gained.startswith("Distillation gained +2.00")
    assert baseline_sentence({"baseline": None}) is None


def test_the_verdict_says_what_distilling_gained_or_that_scratch_shipped():
    from edgedistill.report.results import verdict

    art = {"format": "onnx", "precision": "fp32", "accuracy": 0.9, "bytes": 10, "latency_ms": {"p90": 1.0},
           "measured_on": "host"}
    base = {"accuracy": 0.88, "gain": 0.02, "val_accuracy": 0.87}
    gained = verdict([art], {}, 0.95, "rpi", {"baseline": base, "shipped": "distilled"})["summary"]
    assert gained.endswith("; distilling gained 2.00 points over the same student from scratch")
    lost = verdict([art], {}, 0.95, "rpi", {"baseline": {**base, "gain": -0.031}, "shipped": "scratch"})["summary"]
    assert lost.endswith("; the scratch student shipped: distilling lost 3.10 points against it")
    tied = verdict([art], {}, 0.95, "rpi", {"baseline": {**base, "gain": 0.0}, "shipped": "scratch"})["summary"]
    assert tied.endswith("; the scratch student shipped (it validated higher): on the test split distilling tied "
                         "with it")  # ELPV's half-depth Lite0: both students 88.41 %
    assert "scratch" not in verdict([art], {}, 0.95, "rpi", {"baseline": None})["summary"]
    validated = verdict([art], {}, 0.95, "rpi", {"baseline": {**base, "gain": -0.0028}, "shipped": "distilled",
                                                  "ship": "best"})["summary"]
    assert validated.endswith("; distilling lost 0.28 points on the test split against the same student from scratch "
                              "(the distilled one validated higher)")


def test_a_weak_teacher_ships_the_scratch_student_and_says_so(tmp_path):
    """A teacher barely trained (one epoch at a tiny learning rate) teaches a student less than the labels do: the
    run exports and benchmarks the scratch student, and the verdict, the stage's output and the report say so."""
    from tests.conftest import cli

    spec = tiny_pipeline_dict(teacher={"epochs": 1, "lr": 1e-6},
                              distill={"alpha": 1.0, "baseline": "scratch", "epochs": 3, "batch_size": 64})
    proc = cli("run", write_pipeline(tmp_path / "weak.yaml", spec), "--out", tmp_path / "run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "run" / "report" / "results.json").read_text())
    d = results["distillation"]
    assert d["shipped"] == "scratch" and d["baseline"]["gain"] < 0
    assert "the scratch student shipped: distilling lost" in results["verdict"]["summary"]
    assert "shipping the scratch student" in proc.stderr + proc.stdout
    assert any(flag.startswith("weak teacher") for flag in d["teacher_flags"])
    # What was exported is the scratch student: its fp32 ONNX scores what the baseline scored.
    onnx = next(a for a in results["artifacts"] if a["format"] == "onnx" and a["precision"] == "fp32")
    assert onnx["accuracy"] == pytest.approx(d["baseline"]["accuracy"], abs=1e-9)
    assert results["student"]["accuracy"] == d["baseline"]["accuracy"]
    distill_dir = tmp_path / "run" / "distill"
    assert (distill_dir / "best.safetensors").read_bytes() == (distill_dir / "scratch.safetensors").read_bytes()
    assert "Note on the teacher: weak teacher" in (tmp_path / "run" / "report" / "report.md").read_text()


def test_export_onnx_with_metadata_and_parity(tiny_run):
    from edgedistill.export.onnx import read_metadata

    run_dir, manifest = tiny_run
    (art,) = manifest.stages["export"].metrics["artifacts"]
    assert art["status"] == "ok" and art["format"] == "onnx"
    assert art["parity"]["max_abs_diff"] < 1e-4 and art["parity"]["top1_agreement"] == 1.0
    meta = read_metadata(run_dir / art["path"])
    assert meta["pipeline"] == "tiny" and meta["input_shape"] == [None, 1, 8, 8] and meta["precision"] == "fp32"
    assert meta["class_names"] == [str(i) for i in range(10)] and len(meta["config_digest"]) == 64


def test_onnx_batch_axis_is_dynamic(tiny_run):
    import onnxruntime as ort

    run_dir, _ = tiny_run
    session = ort.InferenceSession(str(run_dir / "export" / "student-fp32.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.zeros((5, 1, 8, 8), np.float32)})[0]
    assert out.shape == (5, 10)


def test_bench_measures_latency_and_accuracy(tiny_run):
    run_dir, manifest = tiny_run
    (cell,) = manifest.stages["bench"].metrics["cells"]
    assert cell["status"] == "ok"
    lat = cell["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] and lat["count"] >= 10
    # The runner's accuracy on the real runtime matches the parity check's (same test split, same model).
    export = manifest.stages["export"].metrics["artifacts"][0]
    assert cell["accuracy"] == pytest.approx(export["parity"]["accuracy"])
    assert cell["threads"] == min(4, len(__import__("os").sched_getaffinity(0)))
    assert "raspberry-pi-4" in cell["target"]


def test_report_results_json_schema(tiny_run):
    run_dir, manifest = tiny_run
    results = json.loads((run_dir / "report" / "results.json").read_text())
    assert results["schema_version"] == 1 and results["pipeline"] == "tiny"
    assert results["device"]["name"] == "raspberry-pi-4"
    assert {"params", "accuracy"} <= set(results["teacher"])
    assert {"arch", "params", "accuracy"} <= set(results["student"])
    (art,) = results["artifacts"]
    assert {"format", "precision", "path", "bytes", "accuracy", "latency_ms", "target", "status", "error"} <= set(art)
    assert set(art["latency_ms"]) >= {"p50", "p90", "p99", "mean", "std"}
    assert results["budgets"]["max_accuracy_drop"] == 0.5  # the pipeline's override
    assert results["budgets"]["max_model_mb"] == 20  # the device's default
    assert {c["budget"] for c in results["verdict"]["checks"]} == {"model size", "peak RAM", "p90 latency",
                                                                   "accuracy drop vs teacher",
                                                                   "accuracy above chance level"}
    assert results["verdict"]["fits"] in (True, False)
    md = (run_dir / "report" / "report.md").read_text()
    assert md.startswith("# Deployment report: tiny → raspberry-pi-4")
    assert "FITS" in md and "| onnx | fp32 |" in md


def test_emulation_is_asked_of_arm_devices_only():
    """bench.emulate: on for a device that names no ARM core stops the bench stage before any work; auto skips
    it; a Pi 4 emulates its Cortex-A72 (when qemu-user is there, for auto)."""
    from edgedistill.bench import emulated
    from edgedistill.config.device import load_device
    from edgedistill.errors import StageFailed
    from edgedistill.stages.bench import emulation_cpu

    host, pi4 = load_device("host"), load_device("raspberry-pi-4")
    with pytest.raises(StageFailed, match="bench.emulate: on, but device 'host' names no hardware.arm_cpu"):
        emulation_cpu("on", host, tokens=False)
    assert emulation_cpu("auto", host, tokens=False) is None and emulation_cpu("off", pi4, tokens=False) is None
    assert emulation_cpu("on", pi4, tokens=False) == "cortex-a72" and emulation_cpu("on", pi4, tokens=True) is None
    assert emulation_cpu("auto", pi4, tokens=False) == ("cortex-a72" if emulated.available() else None)


def test_a_large_test_split_ships_as_a_stated_stratified_sample(tmp_path, monkeypatch):
    import numpy as np

    from edgedistill.config.pipeline import DigitsData
    from edgedistill.data import load_dataset
    from edgedistill.stages import bench

    data = load_dataset(DigitsData(kind="digits"), seed=0)  # 360 test images of 8x8: 256 bytes each as float32
    monkeypatch.setattr(bench, "MAX_TEST_MB", 100 * 256 / 2**20)
    shipped = bench.ship_test_split(data, tmp_path / "test.npz", seed=0)
    assert shipped == {"samples": 100, "of": 360}
    with np.load(tmp_path / "test.npz") as arrays:
        assert arrays["x"].shape == (100, 1, 8, 8) and np.bincount(arrays["y"], minlength=10).min() >= 9
    monkeypatch.setattr(bench, "MAX_TEST_MB", 256)
    assert bench.ship_test_split(data, tmp_path / "all.npz", seed=0) == {"samples": 360, "of": 360}


def test_emulated_runs_take_fewer_samples_of_larger_models():
    """One emulated run spends at most EMULATED_MACS: the tiny students keep 512 samples, a 124 M-MAC one 161."""
    from edgedistill.bench.emulated import fidelity_samples

    assert fidelity_samples(1e5) == 512 and fidelity_samples(124e6) == 161 and fidelity_samples(1e12) == 32
