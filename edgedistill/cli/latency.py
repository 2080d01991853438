"""`edgedistill calibrate` and `edgedistill select`: the latency predictor on a device, and the student it picks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgedistill.cli.common import table_console
from edgedistill.errors import UserError


def calibrate_command(
    device: str = typer.Option(..., "--device", help="Device profile name or YAML."),
    target: str = typer.Option("auto", "--target", help="local, ssh://user@host[:port], or auto (the device's)."),
    formats: str = typer.Option("onnx,tflite", "--formats", help="Comma-separated: onnx, tflite."),
    precisions: str = typer.Option("fp32,int8", "--precisions",
                                   help="Comma-separated: fp32, fp16, int8-dynamic, int8."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Default: the device's cores."),
    # 3 is calibration.ROUNDS, not imported here: the CLI starts without numpy.
    models: str = typer.Option("all", "--models", help="Calibration models: micro (sub-millisecond stacks), real "
                               "(96-224 px MobileNet-style blocks, 1-10 ms on a desktop core) or all; a predictor "
                               "calibrated on one size misses the other."),
    rounds: int = typer.Option(3, "--rounds", min=1, max=20, help="Timing rounds per model; the quietest "
                               "counts. 1 is enough on a device nothing else runs on."),
    min_time: float = typer.Option(0.5, "--min-time", min=0.01, max=60, help="Seconds each model is timed for "
                                   "per round (after a warm-up of up to 0.2 s); shorter is quicker and noisier."),
    output: Optional[Path] = typer.Option(None, "--output", help="Default: NAME.calibration.json next to the profile."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an existing calibration file."),
    trust_new_host: bool = typer.Option(False, "--trust-new-host", help="Accept an SSH host key never seen before."),
    ssh_config: Optional[Path] = typer.Option(None, "--ssh-config", help="An ssh_config to use instead of "
                                              "~/.ssh/config (a device profile's is used only when named here)."),
) -> None:
    """Time calibration models on the device's runtime and fit the latency predictor to it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from edgedistill.bench.local import BenchFailed
    from edgedistill.bench.targets import get_target
    from edgedistill.cli.run import check_ssh_config
    from edgedistill.config.device import device_path, load_device
    from edgedistill.export.formats import FORMATS, PRECISIONS
    from edgedistill.latency.calibration import (
        MODEL_SETS,
        calibrate,
        calibration_path,
        model_count,
        refuse_overwrite,
        write_calibration,
    )

    fmts, precs = _choices("--formats", formats, FORMATS), _choices("--precisions", precisions, PRECISIONS)
    which = _choices("--models", models, MODEL_SETS)
    if len(which) != 1:
        raise UserError(f"--models: one of {', '.join(MODEL_SETS)}, not {models!r}")
    count = model_count(which[0])
    profile_path = device_path(device)
    profile = load_device(device)
    where = get_target(target, profile, measures=("timing",), field="--target")
    check_ssh_config(target, profile, ssh_config)
    out = output or calibration_path(profile_path)
    refuse_overwrite(out, replace)  # say so before minutes of measuring, not after
    n = where.threads(profile, threads)
    for fmt in fmts:
        _require_extra(fmt)
    console = table_console()
    console.print(f"calibrating {profile.name} on {where.describe(profile, n)}: {count} models ({which[0]}) × "
                  f"{len(fmts)} formats × {len(precs)} precisions")

    def bench(artifact: Path) -> dict:
        try:
            # At least 20 runs and --min-time seconds: a 10 ms model still runs 50 times in 0.5 s.
            return where.run(profile, artifact, None, threads=n, warmup_runs=10, warmup_s=min(0.2, min_time / 2),
                             runs=20, min_time_s=min_time, timeout_s=300, trust_new_host=trust_new_host,
                             ssh_config=ssh_config)
        except BenchFailed as exc:
            raise UserError(f"calibration stopped, nothing written: {exc}") from None

    with Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[info]}"), console=console) as progress:
        # One export and `rounds` timings per model, format and precision.
        task = progress.add_task("calibrate", total=count * len(fmts) * len(precs) * (1 + rounds), info="")

        def step(label: str) -> None:
            if progress.tasks[0].fields["info"]:
                progress.advance(task)
            progress.update(task, info=label)

        calibration, _ = calibrate(profile, profile_path, target=where.address, threads=n, bench=bench, formats=fmts,
                                   precisions=precs, rounds=rounds, which=which[0], on_step=step)
        progress.update(task, completed=progress.tasks[0].total, info="fitted")
    write_calibration(calibration, out, replace=replace)
    for key, fit in calibration.fits.items():
        q = fit.quality
        console.print(f"  {key}: in-sample median error {q['median_abs_error']:.1%}, within ±10 % "
                      f"{q['within_10']:.0%}, within ±20 % {q['within_20']:.0%} of {q['models']} models")
    console.print(f"wrote {out}")


def _choices(option: str, value: str, valid) -> list[str]:
    from edgedistill.errors import unknown_choice

    items = [v.strip() for v in value.split(",") if v.strip()]
    for item in items:
        if item not in valid:
            raise UserError(f"{option}: {unknown_choice(option.lstrip('-').rstrip('s'), item, valid)}")
    if not items:
        raise UserError(f"{option}: empty; valid: {', '.join(valid)}")
    return items


def _require_extra(fmt: str) -> None:
    from edgedistill.export.formats import FORMATS

    FORMATS[fmt].require()


def select_command(
    device: str = typer.Option(..., "--device", help="Device profile name or YAML."),
    pipeline: Optional[Path] = typer.Option(None, "--pipeline", help="Pipeline YAML; default: the bundled quickstart."),
    family: Optional[str] = typer.Option(None, "--family", help="Student family; default: the pipeline's."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Deployment format; default: the device's."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Deployment precision; default: the device's."),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="C,H,W to plan for instead of the data's, "
                                              "e.g. 3,224,224."),
    max_params: Optional[int] = typer.Option(None, "--max-params", min=1, help="Largest candidate to consider; "
                                             "default: student.max_param_ratio of the teacher's parameters."),
    objective: Optional[str] = typer.Option(None, "--objective", help="largest, smallest or fastest of those that "
                                            "fit; default: the pipeline's student.objective (largest)."),
    as_json: bool = typer.Option(False, "--json", help="Print the selection as JSON."),
) -> None:
    """Rank the student candidates on a device: size, predicted latency, RAM, what fits, and the choice."""
    from edgedistill.config.device import device_path, load_device
    from edgedistill.config.pipeline import load_pipeline
    from edgedistill.export.formats import FORMATS, PRECISIONS
    from edgedistill.latency.select import OBJECTIVES, nothing_fits, select_for_pipeline
    from edgedistill.models import family_names
    from edgedistill.resources import default_pipeline

    if fmt is not None:
        _choices("--format", fmt, FORMATS)
    if precision is not None:
        _choices("--precision", precision, PRECISIONS)
    if family is not None:
        _choices("--family", family, family_names())
    if objective is not None:
        _choices("--objective", objective, OBJECTIVES)
    shape = _shape(input_shape) if input_shape is not None else None
    spec = load_pipeline(pipeline or default_pipeline())
    if pipeline is None and input_shape is None:  # say whose data and teacher the candidates are sized for
        typer.echo(f"select: planning for the bundled {default_pipeline().name}'s data and teacher; give --pipeline "
                   "(or --input-shape C,H,W) to plan for yours", err=True)
    profile = load_device(device)
    budgets = profile.budgets.model_copy(update=spec.budgets.model_dump(exclude_none=True))
    selection, calibration = select_for_pipeline(spec, profile, device_path(device), budgets, family=family, fmt=fmt,
                                                 precision=precision, input_shape=shape,
                                                 max_params=max_params, objective=objective)
    if as_json:
        typer.echo(json.dumps(selection.to_dict(), indent=2))
    else:
        print_selection(selection, calibration, budgets, profile)
    if selection.chosen is None:
        raise nothing_fits(selection)


def _shape(value: str) -> tuple[int, int, int]:
    from edgedistill.data.npz import MAX_CHANNELS, MAX_SIDE

    try:
        shape = tuple(int(v) for v in value.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or not 1 <= shape[0] <= MAX_CHANNELS or not all(8 <= side <= MAX_SIDE for side in shape[1:]):
        raise UserError(f"--input-shape {value!r}: expected C,H,W with C in 1..{MAX_CHANNELS} and H, W in "
                        f"8..{MAX_SIDE}, e.g. 3,224,224")
    return shape


def print_selection(selection, calibration, budgets, profile) -> None:
    from rich.table import Table

    from edgedistill.latency.select import predictor_note

    console = table_console()
    table = Table(title=f"student candidates on {selection.device} ({selection.format} {selection.precision})")
    for column in ("", "candidate", "params", "MMACs", "size MB", "p90 ms (pred.)", "RAM MB", "fits"):
        table.add_column(column, justify="left" if column in ("", "candidate", "fits") else "right")
    for c in selection.candidates:
        mark = "→" if c is selection.chosen else ""
        table.add_row(mark, c.label, f"{c.params:,}", f"{c.macs / 1e6:.2f}", f"{c.size_mb:.3g}", f"{c.p90_ms:.3g}",
                      f"{c.ram_mb:.3g}", "yes" if c.fits else "no: " + "; ".join(c.breaks))
    console.print(table)
    console.print(f"predictor: {predictor_note(selection, calibration, profile)}")
    console.print(f"budgets: {', '.join(f'{k} {v:g}' for k, v in budgets.model_dump(exclude_none=True).items())}")
    if selection.excluded:
        console.print(selection.excluded)
    console.print(f"tie-break: {selection.tie_break}")
    if selection.chosen:
        console.print(f"chosen: {selection.chosen.label} ({selection.chosen.params:,} params)")
