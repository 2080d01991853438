"""Distributed distillation: the distill stage as 2 torchrun processes (DDP, gloo on CPU)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from edgedistill.distill.trainer import shard
from tests.conftest import cli, tiny_pipeline_dict, write_pipeline


def test_shards_cover_every_example_and_line_up():
    order = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    parts = [shard(order, r, 2) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 6  # padded by wrapping around: both ranks take 6 steps of 1
    assert set(torch.cat(parts).tolist()) == set(order.tolist())
    assert torch.equal(shard(order, 0, 1), order)


def _spec(**distill):
    return tiny_pipeline_dict(teacher={"width": 1.0, "epochs": 8}, distill={"epochs": 12, **distill})


@pytest.mark.slow
def test_two_processes_match_one_and_only_rank_0_writes(tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", _spec())
    accuracy = {}
    for n in (1, 2):
        r = cli("run", path, "--out", tmp_path / f"n{n}", "--nproc", n, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        metrics = json.loads((tmp_path / f"n{n}" / "manifest.json").read_text())["stages"]["distill"]["metrics"]
        assert metrics["processes"] == n
        accuracy[n] = metrics["accuracy"]
    assert abs(accuracy[2] - accuracy[1]) <= 0.05, accuracy  # same recipe, different batch split: within noise
    files = sorted(p.name for p in (tmp_path / "n2" / "distill").iterdir())
    # One weights file and one training state: rank 0's; no per-rank copies.
    assert [f for f in files if f.endswith((".safetensors", ".pt"))] == ["best.safetensors",
                                                                        next(f for f in files if f.startswith("train-state"))]
    assert (tmp_path / "n2" / "report" / "report.md").is_file()


@pytest.mark.slow
def test_a_failing_rank_fails_the_run_naming_it_and_resume_recovers(tmp_path):
    # A feature pair naming a layer the student does not have: every rank fails while setting up.
    bad = write_pipeline(tmp_path / "bad.yaml", _spec(processes=2, features={"mapping": "direct",
                                                                             "pairs": [["stages.9", "stages.0"]]}))
    r = cli("run", bad, "--out", tmp_path / "run", timeout=600)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert re.search(r"distributed distill failed on rank [01]: UserError: unknown layer of MobileNetV2 'stages.9'",
                     " ".join((r.stdout + r.stderr).split()))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["distill"]["status"] == "failed"
    assert manifest["stages"]["teacher"]["status"] == "completed"
    good = write_pipeline(tmp_path / "bad.yaml", _spec(processes=2))
    r = cli("run", good, "--out", tmp_path / "run", "--resume", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert stages["teacher"]["resumed"] and stages["distill"]["status"] == "completed"
