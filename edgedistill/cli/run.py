"""`edgedistill run` and `edgedistill validate`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from edgedistill.errors import UserError


def _pipeline_path(pipeline: Optional[Path]) -> Path:
    from edgedistill.resources import default_pipeline

    return pipeline if pipeline is not None else default_pipeline()


def _run_device(run_dir: Path) -> str | None:
    """The name of the device an earlier run was made for (its device.resolved.yaml), or None."""
    import yaml

    path = run_dir / "device.resolved.yaml"
    try:
        if path.stat().st_size > 1_000_000:
            return None
        found = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return found.get("name") if isinstance(found, dict) and isinstance(found.get("name"), str) else None


def _run_dir(name: str, out: Optional[Path], resume: bool, device: str) -> Path:
    """The run folder: --out, the latest run of this pipeline for this device on --resume, or a new timestamped
    one. A run made for another device is never taken over: its device file, benchmarks and report (and a
    `size: auto` student chosen for that device) would be rewritten for this one."""
    from edgedistill.pipeline.manifest import MANIFEST

    if out is not None:
        if (out / MANIFEST).exists() and not resume:
            raise UserError(f"--out {out}: already holds a run; add --resume to continue it, or choose another folder")
        return out
    base = Path("runs") / folder_name(name)
    if resume:
        earlier = sorted(p for p in base.glob("*") if (p / MANIFEST).exists()) if base.is_dir() else []
        if not earlier:
            raise UserError(f"--resume: no earlier run of '{name}' under {base}/; pass --out DIR to name one")
        mine = [p for p in earlier if _run_device(p) == device]
        if not mine:
            raise UserError(f"--resume: the latest run of '{name}' ({earlier[-1]}) was made for device "
                            f"{_run_device(earlier[-1])!r}, not {device!r}, and none under {base}/ for {device!r}; "
                            "run without --resume, or pass --out DIR to name the run to continue")
        return mine[-1]
    return base / time.strftime("%Y%m%d-%H%M%S")


def folder_name(name: str) -> str:
    """A pipeline's name as one safe path component: no separators, no '..', nothing hidden or empty."""
    import re

    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    return safe[:100] or "pipeline"


def run_command(
    pipeline: Optional[Path] = typer.Argument(None, help="Pipeline YAML; default: the bundled quickstart."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/<pipeline>/<timestamp>)."),
    device: Optional[str] = typer.Option(None, "--device",
                                         help="Device profile name or YAML, replacing the pipeline's."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Seed, replacing the pipeline's."),
    resume: bool = typer.Option(False, "--resume", help="Keep finished stages whose inputs and outputs still match."),
    target: Optional[str] = typer.Option(None, "--target", help="Where to benchmark: local, or ssh://user@host[:port]."),
    trust_new_host: bool = typer.Option(False, "--trust-new-host", help="Accept an SSH host key never seen before."),
    ssh_config: Optional[Path] = typer.Option(None, "--ssh-config", help="An ssh_config to use instead of "
                                              "~/.ssh/config (a device profile's is used only when named here)."),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1, max=256,
                                        help="Distill with N data-parallel processes (torchrun, DDP), replacing "
                                             "distill.processes."),
) -> None:
    """Distill, export, benchmark and report: teacher to a student that fits the device, with proof."""
    from edgedistill.config.device import load_device
    from edgedistill.config.pipeline import load_pipeline
    from edgedistill.distill.compute import resolve
    from edgedistill.distill.worker import check_torchrun_run, torchrun_rank

    path = _pipeline_path(pipeline)
    if device is not None:
        try:
            load_device(device)
        except UserError as exc:
            raise UserError(f"--device: {exc}") from None
    spec = load_pipeline(path, overrides={"device": device, "seed": seed, "distill": {"processes": nproc}, "bench": {
        "target": target, "trust_new_host": trust_new_host or None}})
    profile = load_device(spec.device)
    check_ssh_config(spec.bench.target, profile, ssh_config)
    resolve(spec.train.device, spec.train.precision)  # a GPU asked for and not there: one line before any work
    rank = torchrun_rank()
    if rank is not None:
        check_torchrun_run(spec, out)
    # Ranks other than 0 only follow rank 0 into the distill stage: rank 0 judges the folder.
    run_dir = _run_dir(spec.name, out, resume, profile.name) if not rank else out
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{run_dir}: cannot write the run folder ({exc.strerror or exc})") from None
    if rank:  # rank 0 holds the folder's lock for the whole job; the others only join its distill stage
        _execute(spec, profile, run_dir, resume, ssh_config)
        return
    from edgedistill.pipeline.lock import run_lock

    with run_lock(run_dir):
        _execute(spec, profile, run_dir, resume, ssh_config)


def check_ssh_config(target: str, profile, ssh_config: Optional[Path]) -> None:
    """Before anything runs: the --ssh-config file exists, and a profile's own ssh_config is not used unasked."""
    from edgedistill.bench.targets import get_target

    if ssh_config is not None and not ssh_config.is_file():
        raise UserError(f"{ssh_config}: --ssh-config: file not found")
    get_target(target, profile).ssh_config(profile, ssh_config)


def _execute(spec, profile, run_dir: Path, resume: bool, ssh_config: Optional[Path] = None) -> None:
    from edgedistill.distill.worker import run_as_rank, torchrun_rank
    from edgedistill.pipeline.engine import run_pipeline
    from edgedistill.stages import default_stages
    from edgedistill.stages.distill import train
    from edgedistill.terminal import SafeConsole

    console = SafeConsole(stderr=True)

    def pipeline():
        console.print(f"[bold]edgedistill[/bold] {spec.name} → {profile.name}   run folder: {run_dir}")
        return run_pipeline(spec, profile, default_stages(spec), run_dir, resume=resume, console=console,
                            ssh_config=ssh_config)

    if torchrun_rank() is None:
        manifest = pipeline()
    else:  # one rank of a torchrun job: rank 0 runs the pipeline, the others join its distill stage
        manifest = run_as_rank(pipeline, run_dir, console, train)
        if manifest is None:
            return
    _summary(run_dir, console)
    failed = [f"{n}: {r.error}" for n, r in manifest.stages.items() if r.status == "failed"]
    if failed:
        console.print(f"[red]failed[/red] {failed[0]}  (finished stages are kept; fix it and rerun with --resume)")
        raise typer.Exit(1)


def _summary(run_dir: Path, console) -> None:
    import json

    from rich.markup import escape

    results_path = run_dir / "report" / "results.json"
    # The richest report written: HTML, else Markdown, else the results.
    report = next((p for p in (run_dir / "report" / n for n in ("report.html", "report.md", "results.json"))
                   if p.exists()), None)
    if results_path.exists():
        results = json.loads(results_path.read_text())
        verdict = results["verdict"]
        # Green only for the device's own figures (or the host's): a stand-in's "fits" is yellow.
        stand_in = verdict.get("scope") == "stand-in"
        colour = {True: "yellow" if stand_in else "green", False: "red", None: "yellow"}[verdict["fits"]]
        teacher, student = results["teacher"] or {}, results["student"] or {}
        if teacher and student.get("accuracy") is not None:
            console.print(f"teacher {teacher['params']:,} params, {teacher['accuracy']:.2%}  →  student "
                          f"{student['params']:,} params ({student['param_ratio']:.1%}), {student['accuracy']:.2%}")
            trained = (results.get("environment") or {}).get("training") or {}
            if trained.get("threads"):  # trained on this CPU: its accuracies are this machine's
                where = escape(f"{trained['cpu']}, {trained['kernels']}, {trained['threads']} threads")
                console.print(f"[dim]  accuracies of weights trained here ({where}): another CPU or thread count "
                              "trains slightly different weights[/dim]")
        console.print(f"[{colour}]verdict:[/{colour}] {verdict['summary']}")
    # stdout gets only the report's location, so scripts can capture it.
    print(f"report: {report or run_dir}")


def validate_command(files: list[Path] = typer.Argument(..., help="Pipeline or device YAML files.")) -> None:
    """Check pipeline and device files, the data a pipeline names and its user factories (read, not run),
    without training anything."""
    problems = []
    for path in files:  # every file is checked; the problems of all of them are shown
        try:
            validate_one(path)
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        raise UserError("\n".join(problems))


def validate_one(path: Path) -> None:
    """One pipeline or device file; UserError with its problems."""
    from edgedistill.config.device import DeviceProfile
    from edgedistill.config.loading import load_model, read_yaml
    from edgedistill.config.pipeline import load_pipeline
    from edgedistill.data import load_dataset, spread_note
    from edgedistill.lm.text import load_texts
    from edgedistill.models import check_factory, is_factory

    data, _ = read_yaml(path)
    # A device profile has hardware; everything else is read as a pipeline.
    if isinstance(data, dict) and "hardware" in data:
        load_model(DeviceProfile, path)
        typer.echo(f"ok: {path}")
        return
    spec = load_pipeline(path)
    for part in ("teacher", "student"):
        family = getattr(getattr(spec, part), "family", None)
        problem = check_factory(family) if family and is_factory(family) else None
        if problem:
            raise UserError(f"{path}: {part}.family: {family!r}: {problem}")
    # The data is opened too: a bad .npz is found here, not minutes into a run.
    if spec.data.kind == "text":
        texts = load_texts(spec.data, spec.seed)
        typer.echo(f"ok: {path} (text: {len(texts.train):,} training sentences from {texts.documents[0]} "
                   f"documents, {len(texts.test)} held out from {texts.documents[1]} others)")
        return
    if spec.data.kind == "instructions":
        from edgedistill.lm.instructions import pipeline_prompts, shortfall

        train, evaluation = pipeline_prompts(spec.data, spec.seed)
        typer.echo(f"ok: {path} (instructions: {len(train):,} training prompts, {len(evaluation)} graded held-out "
                   "prompts)")
        note = shortfall(train, spec.data.train_prompts)
        if note:
            typer.echo(f"note: {note}")
        return
    dataset = load_dataset(spec.data, spec.seed)
    shape = "×".join(str(d) for d in dataset.input_shape)
    typer.echo(f"ok: {path} (data: {len(dataset.train)}/{len(dataset.val)}/{len(dataset.test)} "
               f"train/val/test samples of {shape}, {dataset.num_classes} classes)")
    note = spread_note(spec.data, dataset)
    if note:
        typer.echo(f"note: {note}")
