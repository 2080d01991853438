"""The engine on small real stages: order, manifest, resume, corrupted outputs, failures."""

from __future__ import annotations

import json

import pytest

from edgedistill.config.device import load_device
from edgedistill.config.pipeline import load_pipeline
from edgedistill.errors import UserError
from edgedistill.fileio import atomic_write_text
from edgedistill.pipeline.engine import Stage, StageResult, run_pipeline
from edgedistill.pipeline.manifest import Manifest


class Recorder:
    """Stages that write a file each and count their calls; one can be told to fail."""

    def __init__(self):
        self.calls: list[str] = []
        self.fail: dict[str, BaseException] = {}

    def stage(self, name, after=(), always=False):
        def run(spec, ctx):
            self.calls.append(name)
            if name in self.fail:
                raise self.fail[name]
            upstream = "".join(ctx.output(a, "out").read_text() for a in after)
            path = ctx.stage_dir(name) / "out.txt"
            atomic_write_text(path, upstream + name)
            return StageResult(outputs={"out": path}, metrics={"name": name})

        return Stage(name, run, ("distill",) if name == "b" else (), after=after, always=always)

    def stages(self):
        return [self.stage("a"), self.stage("b", after=("a",)), self.stage("c", after=("b",)),
                self.stage("report", always=True)]


@pytest.fixture
def setup(tiny_pipeline):
    return load_pipeline(tiny_pipeline), load_device("host"), Recorder()


def test_runs_in_order_and_records_manifest(setup, tmp_path):
    spec, device, rec = setup
    run_pipeline(spec, device, rec.stages(), tmp_path / "run")
    assert rec.calls == ["a", "b", "c", "report"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    stage = manifest["stages"]["c"]
    assert stage["status"] == "completed" and stage["inputs_digest"] and stage["seconds"] >= 0
    assert stage["outputs"]["out"]["path"] == "c/out.txt" and stage["outputs"]["out"]["bytes"] == 3
    assert len(stage["outputs"]["out"]["sha256"]) == 64
    assert (tmp_path / "run" / "pipeline.resolved.yaml").exists()
    assert (tmp_path / "run" / "c" / "out.txt").read_text() == "abc"


def test_resume_skips_unchanged_stages(setup, tmp_path):
    spec, device, rec = setup
    run_pipeline(spec, device, rec.stages(), tmp_path / "run")
    rec.calls.clear()
    manifest = run_pipeline(spec, device, rec.stages(), tmp_path / "run", resume=True)
    assert rec.calls == ["report"]  # the report always reruns
    assert all(manifest.stages[n].resumed for n in "abc")


def test_changed_config_reruns_that_stage_and_downstream(setup, tmp_path):
    spec, device, rec = setup
    run_pipeline(spec, device, rec.stages(), tmp_path / "run")
    rec.calls.clear()
    changed = spec.model_copy(update={"distill": spec.distill.model_copy(update={"epochs": 3})})
    run_pipeline(changed, device, rec.stages(), tmp_path / "run", resume=True)
    # b's config changed, so b reruns; its output came out the same bytes, so c's inputs are unchanged.
    assert rec.calls == ["b", "report"]
    rec.calls.clear()
    (tmp_path / "run" / "a" / "out.txt").write_text("A")  # corrupted: a reruns, rebuilds the same bytes
    run_pipeline(changed, device, rec.stages(), tmp_path / "run", resume=True)
    assert rec.calls == ["a", "report"]
    rec.calls.clear()
    run_pipeline(changed.model_copy(update={"seed": 5}), device, rec.stages(), tmp_path / "run", resume=True)
    assert rec.calls == ["a", "b", "c", "report"]  # the seed feeds every stage


def test_truncated_output_is_caught_and_rebuilt(setup, tmp_path):
    spec, device, rec = setup
    run_pipeline(spec, device, rec.stages(), tmp_path / "run")
    (tmp_path / "run" / "b" / "out.txt").write_text("a")  # truncated
    rec.calls.clear()
    run_pipeline(spec, device, rec.stages(), tmp_path / "run", resume=True)
    assert rec.calls == ["b", "report"]
    assert (tmp_path / "run" / "b" / "out.txt").read_text() == "ab"


def test_failure_blocks_later_stages_keeps_earlier_and_runs_report(setup, tmp_path):
    spec, device, rec = setup
    rec.fail["b"] = RuntimeError("boom")
    manifest = run_pipeline(spec, device, rec.stages(), tmp_path / "run")
    assert rec.calls == ["a", "b", "report"]
    assert [manifest.stages[n].status for n in ("a", "b", "c", "report")] == ["completed", "failed", "blocked",
                                                                             "completed"]
    assert manifest.stages["b"].error == "RuntimeError: boom"
    assert "Traceback" in (tmp_path / "run" / "b" / "error.txt").read_text()
    assert (tmp_path / "run" / "a" / "out.txt").read_text() == "a"
    # Fixed, then resumed: a is kept, b and c run.
    del rec.fail["b"]
    rec.calls.clear()
    manifest = run_pipeline(spec, device, rec.stages(), tmp_path / "run", resume=True)
    assert rec.calls == ["b", "c", "report"] and manifest.stages["c"].status == "completed"


def test_user_error_mid_run_is_raised_after_the_report(setup, tmp_path):
    spec, device, rec = setup
    rec.fail["c"] = UserError("data.npz: bad")
    with pytest.raises(UserError, match="data.npz: bad"):
        run_pipeline(spec, device, rec.stages(), tmp_path / "run")
    assert rec.calls == ["a", "b", "c", "report"]
    manifest = Manifest.load(tmp_path / "run")
    assert manifest.stages["c"].status == "failed" and manifest.stages["c"].error == "data.npz: bad"


def test_context_refuses_outputs_of_unfinished_stages(setup, tmp_path):
    spec, device, rec = setup
    stages = [rec.stage("c", after=("missing",)), rec.stage("report", always=True)]
    manifest = run_pipeline(spec, device, stages, tmp_path / "run")
    assert manifest.stages["c"].error == "needs output 'out' of stage 'missing', which is pending"
