"""Runs stages in order in a run directory, records each in the manifest, and resumes.

A stage is `run(spec, ctx) -> StageResult`. Stages talk only through the context (which reads the
manifest) and files in the run directory. A failure marks its stage failed, blocks the stages after it,
and still runs the stages marked `always` (the report), so nothing finished is lost.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.console import Console

from edgedistill import __version__
from edgedistill.config.device import Budgets, DeviceProfile
from edgedistill.config.pipeline import PipelineSpec
from edgedistill.errors import StageFailed, UserError
from edgedistill.fileio import atomic_write_text, refuse_links, sha256_json
from edgedistill.pipeline.inputs import files_digest
from edgedistill.pipeline.manifest import MANIFEST, Manifest, StageRecord, record_output
from edgedistill.terminal import SafeConsole

RESOLVED = "pipeline.resolved.yaml"
DEVICE = "device.resolved.yaml"
# Errors of the machine rather than of the stage: fixing them and rerunning with --resume completes the run.
STORAGE_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                  errno.EPERM: "operation not permitted"}
FULL_DISK_BYTES = 1 << 20  # below this much free space, a failed write is taken for a full disk


@dataclass
class StageResult:
    outputs: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[PipelineSpec, "RunContext"], StageResult]
    config_keys: tuple[str, ...]  # sections of the pipeline whose values feed the inputs digest
    after: tuple[str, ...] = ()  # stages whose outputs this one reads
    always: bool = False  # runs even after a failure, and on every resume (the report)


@dataclass
class RunContext:
    run_dir: Path
    spec: PipelineSpec
    device: DeviceProfile
    manifest: Manifest
    console: Console
    inputs_digest: str = ""  # of the stage now running; names its resumable state files
    ssh_config: Path | None = None  # an OpenSSH config the user named on the command line (never a file's)

    @property
    def budgets(self) -> Budgets:
        """The device's budgets with the pipeline's overrides on top."""
        merged = self.device.budgets.model_dump()
        merged.update(self.spec.budgets.model_dump(exclude_none=True))
        return Budgets(**merged)

    def stage_dir(self, name: str) -> Path:
        path = self.run_dir / name
        if path.is_symlink():  # made since the run began: writes would leave the run folder
            raise UserError(f"{path}: a symbolic link in the run folder; the tool writes only inside the run folder")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def record(self, stage: str) -> StageRecord:
        return self.manifest.stages.get(stage) or StageRecord()

    def output(self, stage: str, key: str) -> Path:
        """A completed stage's output file; a clear error when it is not there."""
        rec = self.record(stage)
        if rec.status != "completed" or key not in rec.outputs:
            raise StageFailed(f"needs output '{key}' of stage '{stage}', which is {rec.status}")
        return self.run_dir / rec.outputs[key].path

    def metrics(self, stage: str) -> dict[str, Any]:
        return self.record(stage).metrics


def inputs_digest(stage: Stage, spec: PipelineSpec, device: DeviceProfile, manifest: Manifest) -> str:
    """What a stage's result depends on: its config sections, seed, device, and upstream output hashes."""
    dumped = spec.model_dump(mode="json")
    return sha256_json({
        "stage": stage.name,
        "version": __version__,
        "seed": spec.seed,
        "config": {key: dumped.get(key) for key in stage.config_keys},
        # What the named files hold, not just their paths: a data file replaced in place reruns the stage.
        "files": files_digest([getattr(spec, key, None) for key in stage.config_keys]),
        "device": device.model_dump(mode="json") if "device" in stage.config_keys else None,
        "upstream": {up: {k: o.sha256 for k, o in manifest.stages[up].outputs.items()}
                     for up in stage.after if up in manifest.stages},
    })


def run_pipeline(spec: PipelineSpec, device: DeviceProfile, stages: list[Stage], run_dir: Path, *,
                 resume: bool = False, console: Console | None = None, ssh_config: Path | None = None) -> Manifest:
    """Run `stages` in `run_dir`. Raises UserError for bad input found mid-run, after the report stage."""
    console = console or SafeConsole(stderr=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    refuse_links(run_dir)
    manifest = Manifest.load(run_dir) if resume and (run_dir / MANIFEST).exists() else Manifest(spec.name)
    write_resolved(run_dir, spec, manifest)
    # The device profile as used, so a report rebuilt later shows the budgets this run was judged by.
    atomic_write_text(run_dir / DEVICE, yaml.safe_dump(device.model_dump(mode="json"), sort_keys=False))
    ctx = RunContext(run_dir, spec, device, manifest, console, ssh_config=ssh_config)
    first_failure: BaseException | None = None
    for stage in stages:
        digest = inputs_digest(stage, spec, device, manifest)
        old = manifest.stages.get(stage.name)
        if first_failure is not None and not stage.always:
            manifest.stages[stage.name] = StageRecord(status="blocked", inputs_digest=digest,
                                                      error="an earlier stage failed")
            continue
        if (resume and not stage.always and old is not None and old.status == "completed"
                and old.inputs_digest == digest and old.outputs_intact(run_dir)):
            old.resumed = True
            console.print(f"[dim]· {stage.name}: unchanged, kept from the earlier run[/dim]")
            continue
        failure = _run_stage(stage, ctx, digest)
        storage = storage_error(failure, run_dir, stage.name, manifest) if failure is not None else None
        if storage is not None:
            # Nothing more can be written (not even the report); the manifest on disk keeps every finished stage.
            with contextlib.suppress(OSError):
                manifest.save(run_dir)
            raise storage
        first_failure = first_failure or failure
        manifest.save(run_dir)
        write_resolved(run_dir, spec, manifest)
    manifest.save(run_dir)
    if isinstance(first_failure, (UserError, KeyboardInterrupt)):
        raise first_failure
    return manifest


def write_resolved(run_dir: Path, spec: PipelineSpec, manifest: Manifest) -> None:
    """pipeline.resolved.yaml: the pipeline with every default filled in, and what the run decided. A student of
    size auto is written as the fixed width and depth the student stage chose (chosen_by: auto), so that the
    run folder reads back as the model it holds."""
    dumped = spec.model_dump(mode="json")
    student = manifest.stages.get("student")
    if getattr(getattr(spec, "student", None), "size", None) == "auto" and student and student.status == "completed":
        dumped["student"].update(size="fixed", width=student.metrics["width"], depth=student.metrics["depth"],
                                 chosen_by="auto")
    atomic_write_text(run_dir / RESOLVED, yaml.safe_dump(dumped, sort_keys=False))


def _run_stage(stage: Stage, ctx: RunContext, digest: str) -> BaseException | None:
    """Run one stage, record it; return the exception it failed with, if any."""
    rec = StageRecord(status="running", inputs_digest=digest, started_at=time.time())
    ctx.manifest.stages[stage.name] = rec
    ctx.manifest.save(ctx.run_dir)
    ctx.inputs_digest = digest
    ctx.console.print(f"[bold]▸ {stage.name}[/bold]")
    start = time.perf_counter()
    try:
        result = stage.run(ctx.spec, ctx)
        rec.outputs = {key: record_output(ctx.run_dir, path) for key, path in result.outputs.items()}
        rec.metrics, rec.warnings, rec.status = result.metrics, result.warnings, "completed"
        for warning in result.warnings:
            ctx.console.print(f"  [yellow]warning:[/yellow] {warning}")
        return None
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded; the caller decides what to raise
        rec.status = "failed"
        rec.error = "interrupted" if isinstance(exc, KeyboardInterrupt) else _one_line(exc)
        error_file = ctx.run_dir / stage.name / "error.txt"
        try:
            error_file.parent.mkdir(parents=True, exist_ok=True)
            error_file.write_text(traceback.format_exc())
        except OSError:  # a full disk: the error is still printed, and recorded in the manifest if it can be
            with contextlib.suppress(OSError):
                error_file.unlink(missing_ok=True)
        ctx.console.print(f"  [red]failed:[/red] {rec.error}")
        return exc
    finally:
        rec.finished_at = time.time()
        rec.seconds = round(time.perf_counter() - start, 3)


def storage_error(exc: BaseException, run_dir: Path, stage: str, manifest: Manifest) -> UserError | None:
    """A full disk, or a run folder that is read-only or forbidden, as one line naming where; else None.

    Libraries wrap the OSError (torch.save raises a RuntimeError from its failed stream), so the chain of
    causes is searched, and a file system with almost no space left counts as full whatever was raised.
    """
    reason, where = None, None
    seen: BaseException | None = exc
    while seen is not None and reason is None:
        if isinstance(seen, OSError) and seen.errno in STORAGE_ERRORS:
            reason, where = STORAGE_ERRORS[seen.errno], seen.filename
        seen = seen.__cause__ or seen.__context__
    if reason is None:
        try:
            if shutil.disk_usage(run_dir).free < FULL_DISK_BYTES:
                reason = STORAGE_ERRORS[errno.ENOSPC]
        except OSError:
            return None
    if reason is None:
        return None
    kept = [name for name, rec in manifest.stages.items() if rec.status == "completed"]
    return UserError(f"{where or run_dir}: {reason} (stage {stage}); finished stages are kept "
                     f"({', '.join(kept) or 'none'}): make room or fix permissions, then rerun with --resume")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (UserError, StageFailed)) else f"{type(exc).__name__}: {text}"


def load_run(run_dir: Path, console: Console | None = None) -> RunContext:
    """The context of a finished (or failed) run, from its folder, to rebuild its report."""
    from edgedistill.config.device import load_device
    from edgedistill.config.pipeline import load_pipeline

    for name in (RESOLVED, MANIFEST):
        if not (run_dir / name).is_file():
            raise UserError(f"{run_dir}: not a run folder (no {name})")
    refuse_links(run_dir)
    spec = load_pipeline(run_dir / RESOLVED)
    device = load_device(str(run_dir / DEVICE)) if (run_dir / DEVICE).is_file() else load_device(spec.device)
    return RunContext(run_dir, spec, device, Manifest.load(run_dir), console or SafeConsole(stderr=True))
