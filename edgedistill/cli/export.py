"""`edgedistill export` and `edgedistill quantize`: the export stage's libraries on a checkpoint or a file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgedistill.errors import UserError
from edgedistill.precisions import PRECISIONS, QUANTIZED, get_precision


def _load_npz(path: Path, what: str, input_shape=None):
    """x (as (N, C, H, W) float32) and y (or None) of an .npz, checked: bounded before loading, finite, and
    of the model's `input_shape` ([batch, C, H, W], from its metadata) when that is known."""
    import zipfile

    import numpy as np

    from edgedistill.data.npz import check_npz

    if not path.is_file():
        raise UserError(f"{path}: {what}: file not found")
    try:
        check_npz(path, ("x",))
        with np.load(path, allow_pickle=False) as arrays:
            x = arrays["x"].astype(np.float32)
            y = arrays["y"] if "y" in arrays.files else None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path}: {what}: expected an .npz with array x (and y for accuracy) ({exc})") from None
    x = x[:, None] if x.ndim == 3 else x
    expected = list(input_shape[1:]) if input_shape and len(input_shape) == 4 else None
    if x.ndim != 4 or len(x) == 0 or (expected and list(x.shape[1:]) != expected):
        want = "×".join(map(str, expected)) if expected else "C×H×W"
        raise UserError(f"{path}: {what}: x has shape {x.shape}; expected (N, {want.replace('×', ', ')}) samples, "
                        f"N >= 1, to match the model's {want} input")
    if not np.isfinite(x).all():
        raise UserError(f"{path}: {what}: x holds NaN or inf")
    if y is not None and (y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer)):
        raise UserError(f"{path}: {what}: y has shape {y.shape} and dtype {y.dtype}; expected {len(x)} integer labels")
    return x, y


def _outside(run_dir: Path, families: tuple[str, ...]) -> tuple[str, ...]:
    """The families a run folder's pipeline may authorize. A run folder never authorizes its own code: a user
    factory whose module would be imported from inside the folder (`export .` puts it first on the path), or
    that cannot be found, is left out, so it needs --allow-factory."""
    from edgedistill.models import factory_source, is_factory

    inside = run_dir.resolve()

    def outside(family: str) -> bool:
        source = factory_source(family)
        return source is not None and not source.is_relative_to(inside)

    return tuple(f for f in families if not is_factory(f) or outside(f))


def _checkpoint(checkpoint: Path, arch: Optional[Path], allow_factory: bool = False):
    """(model, arch info, run folder or None) from a weights file + arch.json, or from a run folder (whose
    pipeline names the user factories its arch.json may use)."""
    from edgedistill.models.io import ArchInfo, load_weights, pipeline_families

    run_dir = checkpoint if checkpoint.is_dir() else None
    if run_dir and (run_dir / "distill" / "model" / "config.json").is_file():
        raise UserError(f"{run_dir}: a sentence-encoder run (its student is the Hugging Face folder distill/model); "
                        "export and quantize take image students: change the pipeline's export section and rerun "
                        "it with --resume, which redoes only the export and what follows")
    weights = checkpoint / "distill" / "best.safetensors" if run_dir else checkpoint
    arch = arch or (checkpoint / "student" / "arch.json" if run_dir else checkpoint.with_name("arch.json"))
    for path, what in ((weights, "CHECKPOINT"), (arch, "--arch")):
        if not path.is_file():
            raise UserError(f"{path}: {what}: file not found (give a run folder, or weights with --arch arch.json)")
    factories: tuple[str, ...] | bool = allow_factory
    if run_dir and not allow_factory and (run_dir / "pipeline.resolved.yaml").is_file():
        from edgedistill.config.pipeline import load_pipeline

        factories = _outside(run_dir, pipeline_families(load_pipeline(run_dir / "pipeline.resolved.yaml")))
    info = ArchInfo.load(arch, factories)
    model = info.build()
    load_weights(model, weights)
    return model, info, run_dir


def export_command(
    checkpoint: Path = typer.Argument(..., help="A run folder, or student weights (.safetensors / .pt)."),
    format: str = typer.Option("onnx", "--format", help="onnx or tflite."),
    precision: str = typer.Option("fp32", "--precision", help=f"{', '.join(PRECISIONS)}."),
    arch: Optional[Path] = typer.Option(None, "--arch", help="arch.json (default: beside the weights)."),
    calibration_data: Optional[Path] = typer.Option(None, "--calibration-data", help=".npz with x, for int8."),
    test_data: Optional[Path] = typer.Option(None, "--test-data", help=".npz with x and y, for parity."),
    method: str = typer.Option("minmax", "--calibration", help="int8: minmax; ONNX also entropy, percentile."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (default: beside the checkpoint)."),
    allow_factory: bool = typer.Option(False, "--allow-factory", help="Let arch.json name a user factory "
                                       "(package.module:function), which imports that module."),
) -> None:
    """Export a student checkpoint to ONNX or TFLite at a precision, and check its parity with PyTorch."""
    from edgedistill.distill.trainer import predict
    from edgedistill.errors import unknown_choice
    from edgedistill.export.formats import artifact_name, get_format
    from edgedistill.export.parity import compare

    fmt = get_format(format)
    if precision not in PRECISIONS:
        raise UserError(f"--precision: {unknown_choice('precision', precision, PRECISIONS)}")
    if method not in fmt.calibration_methods:
        raise UserError(f"--calibration: {unknown_choice('calibration method', method, fmt.calibration_methods)}")
    model, info, run_dir = _checkpoint(checkpoint, arch, allow_factory)
    calib_x, test = None, None
    if run_dir is not None:
        from edgedistill.config.pipeline import load_pipeline
        from edgedistill.data import load_dataset, stratified_indices

        spec = load_pipeline(run_dir / "pipeline.resolved.yaml")
        data = load_dataset(spec.data, spec.seed)
        picked = stratified_indices(data.train.y, spec.export.calibration.samples, spec.seed)
        calib_x, test = data.train.x[picked], (data.test.x, data.test.y)
    shape = [None, info.in_channels, *info.input_hw]
    if calibration_data:
        calib_x, _ = _load_npz(calibration_data, "--calibration-data", shape)
    if test_data:
        test = _load_npz(test_data, "--test-data", shape)
    if get_precision(precision).needs_calibration and calib_x is None:
        raise UserError("--calibration-data: static int8 needs calibration samples (an .npz with x)")
    out = out or (run_dir / "export" if run_dir else checkpoint.parent) / artifact_name(format, precision)
    fp32 = out if precision == "fp32" else out.with_name(artifact_name(format, "fp32"))
    scratch_fp32 = precision != "fp32" and not fp32.exists()  # made only to quantize from: removed after
    metadata = {"pipeline": "edgedistill export", "input_shape": [None, info.in_channels, *info.input_hw],
                "input_dtype": "float32", "precision": "fp32", "class_names": info.class_names,
                "model": f"{info.family} x{info.width} depth x{info.depth}"}
    fmt.export(model, (1, info.in_channels, *info.input_hw), fp32, opset=17, metadata=metadata)
    try:
        calibration = method if get_precision(precision).needs_calibration else None
        fmt.variant(fp32, out, precision, calib_x, calibration, [], metadata)
    finally:
        if scratch_fp32:
            fp32.unlink(missing_ok=True)
    typer.echo(f"{format} {precision}: {out} ({out.stat().st_size / 1024:.1f} KiB)")
    if test is not None:
        x, y = test
        reference = predict(model, x)
        parity = compare(reference, fmt.outputs(out, x), y if y is not None else reference.argmax(1),
                         1e-4, f"{format} {precision}")
        typer.echo(f"parity: max |Δ| {parity.max_abs_diff:.2e}, top-1 agreement {parity.top1_agreement:.2%}"
                   + (f", accuracy {parity.accuracy:.2%}" if y is not None else ""))


def quantize_command(
    model: Path = typer.Argument(..., help="An fp32 .onnx or .tflite file."),
    precision: str = typer.Option("int8", "--precision", help=f"{', '.join(QUANTIZED)}."),
    calibration_data: Optional[Path] = typer.Option(None, "--calibration-data", help=".npz with x, for int8."),
    method: str = typer.Option("minmax", "--calibration", help="int8: minmax; ONNX also entropy, percentile."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (default: MODEL-PRECISION.suffix)."),
) -> None:
    """Quantize an exported fp32 model file, keeping its metadata."""
    from edgedistill.errors import unknown_choice
    from edgedistill.export.formats import format_of

    fmt = format_of(model)
    if not model.is_file():
        raise UserError(f"{model}: file not found")
    if precision not in QUANTIZED:
        raise UserError(f"--precision: {unknown_choice('precision', precision, QUANTIZED)}")
    if method not in fmt.calibration_methods:
        raise UserError(f"--calibration: {unknown_choice('calibration method', method, fmt.calibration_methods)}")
    out = out or model.with_name(f"{model.stem}-{precision}{model.suffix}")
    try:
        metadata = fmt.read_metadata(model)
    except Exception as exc:  # noqa: BLE001 - a file that is not a model is the user's input
        why = " ".join(str(exc).split())[:200]
        raise UserError(f"{model}: not a readable {fmt.name} model ({why})") from None
    calib_x = None
    if calibration_data:
        calib_x = _load_npz(calibration_data, "--calibration-data", metadata.get("input_shape"))[0]
    if get_precision(precision).needs_calibration and calib_x is None:
        raise UserError("--calibration-data: static int8 needs calibration samples (an .npz with x)")
    try:
        calibration = method if get_precision(precision).needs_calibration else None
        fmt.variant(model, out, precision, calib_x, calibration, [], metadata)
    except Exception as exc:  # noqa: BLE001 - the quantizer refusing the user's file or data, in one line
        raise UserError(f"{model}: {precision} quantization failed: {' '.join(str(exc).split())[-300:]}") from None
    typer.echo(f"{precision}: {out} ({out.stat().st_size / 1024:.1f} KiB, from {model.stat().st_size / 1024:.1f} KiB)")
