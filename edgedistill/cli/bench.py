"""`edgedistill bench MODEL`: time one exported model, here or on a connected device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgedistill.errors import UserError
from edgedistill.terminal import terminal_safe


def bench_command(
    model: Path = typer.Argument(..., help="An exported .onnx or .tflite file."),
    target: str = typer.Option("auto", "--target", help="local, ssh://user@host[:port], emulated[:cpu] (the device's "
                                 "ARM CPU under qemu: accuracy and agreement, no latency), or auto (the device's)."),
    device: str = typer.Option("host", "--device", help="Device profile: threads, providers, connection."),
    data: Optional[Path] = typer.Option(None, "--data", help=".npz with x and y for accuracy (default: zeros), or a "
                                        "folder of <class>/<image> files, read with the model's preprocessing."),
    samples: int = typer.Option(512, "--samples", min=1, max=100_000,
                                help="With a --data folder: at most this many images, drawn evenly by class."),
    runs: int = typer.Option(100, "--runs", min=1, help="Timed runs (at least; also at least --min-time-s)."),
    min_time_s: float = typer.Option(0.5, "--min-time-s", min=0),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Warm-up runs."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Default: the device's cores."),
    timeout_s: float = typer.Option(600, "--timeout", min=0.001, help="Seconds for the whole run on the target."),
    trust_new_host: bool = typer.Option(False, "--trust-new-host", help="Accept an SSH host key never seen before."),
    ssh_config: Optional[Path] = typer.Option(None, "--ssh-config",
                                              help="An ssh_config to use instead of ~/.ssh/config."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", min=1, help="Tokens per input, for language models "
                                          "(ONNX; TFLite ones have a fixed length). Default 32."),
    as_json: bool = typer.Option(False, "--json", help="Print the runner's JSON result."),
) -> None:
    """Benchmark MODEL: p50/p90/p99 latency, init time, peak RSS, accuracy on --data, device info."""
    from edgedistill.bench.local import BenchFailed
    from edgedistill.bench.targets import get_target
    from edgedistill.cli.run import check_ssh_config
    from edgedistill.config.device import load_device
    from edgedistill.export.formats import format_of

    format_of(model)  # a suffix some format has
    if not model.is_file():
        raise UserError(f"{model}: MODEL: file not found")
    if data is not None and data.is_dir():
        data = _folder_data(model, data, samples)
    elif data is not None and not data.is_file():
        raise UserError(f"{data}: --data: file not found")
    if data is not None:
        _check_data(data)
    profile = load_device(device)
    where = get_target(target, profile, field="--target")
    if where.measures == "fidelity":
        return _bench_emulated(model, where.cpu(profile), data, timeout_s, as_json)
    check_ssh_config(target, profile, ssh_config)
    n = where.threads(profile, threads)
    try:
        result = where.run(profile, model, data, threads=n, warmup_runs=warmup, warmup_s=0.2, runs=runs,
                           min_time_s=min_time_s, timeout_s=timeout_s, trust_new_host=trust_new_host,
                           ssh_config=ssh_config, seq_len=seq_len)
    except BenchFailed as exc:
        raise UserError(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    lat, dev = result["latency_ms"], result["device"]
    acc = "" if result["accuracy"] is None else f", accuracy {result['accuracy']:.2%} on {result['samples']} samples"
    cpu = dev.get("cpu_model", dev.get("machine"))
    gen = result.get("generation")
    if gen:  # a KV-cache decoder: time to first token and decode speed
        _say(f"{model.name} on {where.describe(profile, n)}, CPU {cpu}: time to first token p50 "
             f"{gen['ttft_ms']['p50']:.1f} ms ({gen['prompt_tokens']}-token prompt), "
             f"{gen['decode_tokens_per_s']:.1f} tokens/s (p90 {lat['p90']:.2f} ms a token, {gen['runs']} "
             f"generations of {gen['new_tokens']}); init {result['init_ms']:.1f} ms, peak RSS "
             f"{result['peak_rss_mb']:.0f} MB")
        return
    _say(f"{model.name} on {where.describe(profile, n)}, CPU {cpu}: "
         f"p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f} ms, p99 {lat['p99']:.3f} ms over {lat['count']} runs; "
         f"init {result['init_ms']:.1f} ms, peak RSS {result['peak_rss_mb']:.0f} MB{acc}")


def _say(text: str) -> None:
    """A result line: the device's answer (its CPU name, its machine) is shown escaped, never interpreted."""
    typer.echo(terminal_safe(text, one_line=True))


def _bench_emulated(model: Path, cpu: str, data: Path | None, timeout_s: float, as_json: bool) -> None:
    """The model on the device's ARM CPU under qemu: accuracy, and agreement with this host's runtime."""
    import numpy as np

    from edgedistill.bench import emulated
    from edgedistill.bench.local import BenchFailed
    from edgedistill.export.formats import format_of

    if data is None:
        raise UserError("--target emulated checks accuracy and agreement on ARM kernels, not speed: give --data")
    with np.load(data, allow_pickle=False) as arrays:
        x, y = arrays["x"].astype(np.float32), arrays["y"]
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) as `run` reads it
    if x.ndim != 4:
        raise UserError(f"{data}: --data: x has shape {x.shape}; expected (N, H, W) or (N, C, H, W) images")
    fmt = format_of(model)
    try:
        reference = fmt.outputs(model, x[:emulated.FIDELITY_SAMPLES])
    except ImportError:
        raise UserError(f"agreement is measured against this host's {fmt.runtime}: "
                        f"pip install 'edgedistill[{fmt.extra}]'") from None
    except Exception as exc:  # noqa: BLE001 - the runtime's own error types, for a file or data it cannot run
        raise UserError(f"{model}: MODEL: this host's {fmt.runtime} cannot run it on {data}'s x of shape {x.shape} "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    try:
        fidelity = emulated.arm_fidelity(model, x, y, reference, cpu=cpu, timeout_s=timeout_s)
    except BenchFailed as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:  # the data refused on the way to the device
        raise UserError(f"{data}: {exc}") from None
    fidelity["reference"] = f"this host's {fmt.runtime}"
    if as_json:
        typer.echo(json.dumps(fidelity, indent=2))
        return
    _say(f"{model.name} on emulated {cpu} ({fidelity['machine']}, qemu {fidelity['qemu']}): accuracy "
         f"{fidelity['accuracy']:.2%} on {fidelity['samples']} samples; top-1 agreement with this host's "
         f"{fmt.runtime} {fidelity['top1_agreement']:.2%}, max |Δ| {fidelity['max_abs_diff']:.1e}. "
         f"Timing under emulation is not a device latency: measure it on the device (--target ssh://...).")


def _folder_data(model: Path, folder: Path, samples: int) -> Path:
    """An image folder as the .npz the runner takes, preprocessed as the model's metadata says (in a temporary
    folder removed at exit)."""
    import atexit
    import shutil
    import tempfile

    import numpy as np

    from edgedistill.data.images import folder_as_arrays, holds_training_images
    from edgedistill.export.formats import format_of

    metadata = format_of(model).read_metadata(model)
    x, y, found = folder_as_arrays(folder, metadata, samples, str(model))
    typer.echo(f"--data {folder}: {len(y)} of {found} images, preprocessed as {model.name}'s metadata says", err=True)
    if holds_training_images(folder, metadata.get("trained_on")):
        typer.echo(f"--data {folder}: holds images {model.name} was trained on (its metadata says so): the accuracy "
                   "below is not on held-out images; give the run's test split or a folder it never saw", err=True)
    tmp = Path(tempfile.mkdtemp(prefix="edgedistill-bench-"))
    atexit.register(shutil.rmtree, tmp, True)
    np.savez(tmp / "data.npz", x=x, y=y)
    return tmp / "data.npz"


def _check_data(data: Path) -> None:
    """The --data file is what `run` takes (x (N, H, W) or (N, C, H, W), integer y), bounded before it ships."""
    import zipfile

    from edgedistill.data.npz import check_npz

    try:
        check_npz(data, ("x", "y"))
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{data}: --data: not a readable .npz with arrays x and y, without pickles ({exc})") from None
