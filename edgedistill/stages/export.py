"""Export stage: every format at every precision, each artifact checked for parity with PyTorch.

Quantized artifacts pass the accuracy gate (on the validation split) or fall back, with every attempt
recorded. A format whose conversion fails records its error; the other formats go on.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from edgedistill.cost import is_linear_heavy, model_cost
from edgedistill.data import load_dataset, preprocessing, stratified_indices
from edgedistill.distill.trainer import accuracy, predict
from edgedistill.errors import StageFailed
from edgedistill.export.formats import artifact_name, get_format
from edgedistill.export.parity import compare
from edgedistill.fileio import sha256_json
from edgedistill.models.io import ArchInfo, load_weights, pipeline_families
from edgedistill.pipeline.engine import StageResult
from edgedistill.precisions import get_precision
from edgedistill.quantize.gate import run_gate


def requested_precisions(spec, device, linear_heavy: bool) -> list[str]:
    """The pipeline's precisions, 'auto' being the device's default precision for this kind of model:
    int8 means static int8 for convolutional models and dynamic int8 for linear-heavy ones."""
    out = []
    for p in spec.export.precisions:
        if p == "auto":
            p = device.default_precision
            if p == "int8" and linear_heavy:
                p = "int8-dynamic"
        if p not in out:
            out.append(p)
    return out


def run(spec, ctx) -> StageResult:
    cfg = spec.export
    data = load_dataset(spec.data, spec.seed)
    arch = ArchInfo.load(ctx.output("student", "arch"), pipeline_families(spec))
    model = arch.build()
    load_weights(model, ctx.output("distill", "weights"))
    reference = predict(model, data.test.x)
    val_reference = accuracy(predict(model, data.val.x), data.val.y)
    calibration_x = data.train.x[stratified_indices(data.train.y, cfg.calibration.samples, spec.seed)]
    precisions = requested_precisions(spec, ctx.device, is_linear_heavy(model, data.input_shape))
    metadata = {"pipeline": spec.name, "config_digest": sha256_json(spec.model_dump(mode="json")),
                "input_shape": [None, *data.input_shape], "input_dtype": "float32", "precision": "fp32",
                "class_names": arch.class_names, "model": f"{arch.family} x{arch.width} depth x{arch.depth}",
                "preprocessing": preprocessing(spec.data, data)}
    if spec.data.kind == "imagefolder":  # so that `bench --data` can say when it is given training images
        from edgedistill.data.images import trained_on

        metadata["trained_on"] = trained_on(spec.data.root)
    warnings: list[str] = []
    judge = GateJudge.for_run(spec, ctx, data.val, warnings, model_cost(model, tuple(data.input_shape)).macs)
    try:
        artifacts, outputs = _every_artifact(ctx, model, data, precisions, warnings, {
            "reference": reference, "val_reference": val_reference, "calibration_x": calibration_x,
            "data": data, "metadata": metadata, "judge": judge})
    finally:
        judge.close()
    if not outputs:
        raise StageFailed("no artifact exported: " + "; ".join(a.get("error", "") for a in artifacts))
    return StageResult(outputs=outputs, metrics={"artifacts": artifacts, "preprocessing": metadata["preprocessing"],
                                                 "gate_reference_accuracy": val_reference,
                                                 "gate_max_drop": cfg.gate.max_drop}, warnings=warnings)


def _every_artifact(ctx, model, data, precisions: list[str], warnings: list[str], shared: dict):
    """Each format exported in fp32, then each precision of it through the gate: (records, shipped files)."""
    cfg, out = ctx.spec.export, ctx.stage_dir("export")
    artifacts, outputs = [], {}
    for name in cfg.formats:
        fp32_path = out / artifact_name(name, "fp32")
        try:
            get_format(name).export(model, (1, *data.input_shape), fp32_path, opset=cfg.opset,
                                    metadata=shared["metadata"])
        except Exception as exc:  # noqa: BLE001 - one failed format is recorded, the others go on
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
            warnings.append(f"{name}: export failed: {error[:200]}")
            artifacts += [{"format": name, "requested_precision": p, "precision": p, "status": "failed",
                           "error": error} for p in precisions]
            continue
        for precision in precisions:
            record, path = _gated_artifact(ctx, name, precision, fp32_path, shared=shared, warnings=warnings)
            artifacts.append(record)
            if path is not None:
                outputs[f"{name}-{precision}"] = path
        shutil.rmtree(out / "attempts", ignore_errors=True)
    return artifacts, outputs


def _gated_artifact(ctx, name: str, precision: str, fp32_path, *, shared: dict, warnings: list[str]):
    """One (format, precision) artifact through the accuracy gate and the parity check.

    Returns its record for the manifest and the shipped file (None when it failed).
    """
    cfg, fmt = ctx.spec.export, get_format(name)
    data, metadata, out = shared["data"], shared["metadata"], ctx.stage_dir("export")
    record = {"format": name, "requested_precision": precision}
    work = out / "attempts"
    work.mkdir(exist_ok=True)
    calibration = cfg.calibration.method
    if get_precision(precision).needs_calibration and calibration not in fmt.calibration_methods:
        calibration = fmt.calibration_methods[0]  # what the quantizer can do, and what the metadata will say
        warnings.append(f"{name}: calibration {cfg.calibration.method} is not available ({fmt.quantizer} does "
                        f"{', '.join(fmt.calibration_methods)}); {calibration} used")
    gate = run_gate(
        precision, reference_accuracy=shared["val_reference"], max_drop=cfg.gate.max_drop,
        calibration=calibration, other_calibrations=list(fmt.calibration_methods), workdir=work,
        enabled=cfg.gate.enabled, narrow_weights=fmt.narrow_weights,
        make=lambda p, calib, keep, dest, narrow: fmt.variant(fp32_path, dest.with_suffix(fmt.suffix), p,
                                                             shared["calibration_x"], calib, keep, metadata, narrow),
        evaluate=lambda path: shared["judge"].accuracy(fmt, path, quantized=path != fp32_path),
        first_and_last=lambda: fmt.first_and_last_layers(fp32_path))
    record["attempts"] = [{**a.as_dict(), **shared["judge"].judged.get(a.path, {})} for a in gate.attempts]
    if get_precision(precision).integer:  # whose integer kernels the gate's accuracies are (they differ by CPU)
        record["gate_judged_on"] = shared["judge"].describe(fmt.runtime, ctx.device.name)
    final = gate.final
    if final is None:
        record.update(precision=precision, status="failed", error="; ".join(a.reason for a in gate.attempts))
        warnings.append(f"{name} {precision}: every attempt failed")
        return record, None
    # A fallback is named for what it is: student-int8-fallback-fp16.onnx, never student-int8.onnx.
    target = out / (artifact_name(name, precision) if final.precision == precision
                    else f"student-{precision}-fallback-{final.precision}{fmt.suffix}")
    if final.path != fp32_path and final.path != target:
        os.replace(final.path, target)
    elif final.path == fp32_path and target != fp32_path:
        shutil.copyfile(fp32_path, target)
    record["precision"] = final.precision
    record["input_quantization"] = fmt.read_metadata(target).get("input_quantization")  # written with the variant
    if gate.fell_back:
        record["fallback"] = final.reason
        warnings.append(f"{name} {precision}: {final.reason}")
    try:
        parity = compare(shared["reference"], fmt.outputs(target, data.test.x), data.test.y,
                         cfg.parity.fp32_atol, f"{name} {final.precision}")
    except (StageFailed, ValueError) as exc:  # a shape mismatch: this artifact cannot ship
        record.update(status="failed", error=str(exc), path=str(target.relative_to(ctx.run_dir)))
        warnings.append(f"{name} {precision}: {exc}")
        return record, None
    record.update(path=str(target.relative_to(ctx.run_dir)), bytes=target.stat().st_size, parity=parity.as_dict())
    problem = cfg.parity.problem(final.precision, parity.max_abs_diff, parity.top1_agreement,
                                 float(abs(shared["reference"]).max()))
    record["parity"]["within_tolerance"] = problem is None
    if problem is not None:  # the artifact does not compute what the student computes: it does not ship
        record.update(status="failed", error=f"parity: {problem}")
        warnings.append(f"{name} {final.precision}: parity: {problem}")
        ctx.console.print(f"  [red]{name} {final.precision}: parity failed[/red]: {problem}")
        return record, None
    record["status"] = "ok"
    asked = f" (asked {precision})" if gate.fell_back else ""
    judged = f"; gate judged on {record['gate_judged_on']}" if "gate_judged_on" in record else ""
    ctx.console.print(f"  {name} {final.precision}{asked}: {target.stat().st_size / 1024:.1f} KiB, max |Δ| "
                      f"{parity.max_abs_diff:.1e}, top-1 agreement {parity.top1_agreement:.1%}, "
                      f"accuracy {parity.accuracy:.2%}{judged}")
    return record, target


class GateJudge:
    """Whose kernels measure a quantized artifact's accuracy for the gate. Integer kernels differ by CPU (x86
    without VNNI saturates 16-bit sums of u8 x s8 pairs; an ARM core widens and accumulates otherwise), so where
    the device profile names an ARM core and qemu-user is here, the artifact runs on that core under emulation
    (bench/emulated.py) and that accuracy decides; this host's is recorded beside it. If emulation fails, the
    host's decides and a warning says so."""

    def __init__(self, split, cpu: str | None, work: Path, timeout_s: float, warnings: list[str]):
        self.split, self.cpu, self.timeout_s, self.warnings = split, cpu, timeout_s, warnings
        self.npz = work / ".gate-validation.npz"
        if cpu is not None:
            np.savez(self.npz, x=np.asarray(split.x), y=split.y)
        self.judged: dict[Path, dict] = {}  # attempt file -> {"host_accuracy", "judged_on"}

    @classmethod
    def for_run(cls, spec, ctx, split, warnings: list[str], macs: int) -> GateJudge:
        """The judge for this run; `macs`: the student's multiply-adds per sample, which bound how many samples
        an emulated run can take (bench/emulated.py: fidelity_samples)."""
        from edgedistill.bench import emulated

        mode, cpu = spec.export.gate.judge_on, ctx.device.hardware.arm_cpu
        if mode == "device" and (cpu is None or not emulated.available()):
            raise StageFailed(f"export.gate.judge_on: device, but {ctx.device.name!r} names no hardware.arm_cpu"
                              if cpu is None else "export.gate.judge_on: device needs qemu-user-static and "
                                                  "debootstrap (apt-get install qemu-user-static debootstrap)")
        emulate = mode == "device" or (mode == "auto" and cpu is not None and spec.bench.emulate != "off"
                                       and emulated.available())
        allowed = emulated.fidelity_samples(macs)
        if emulate and len(split) > allowed:
            warnings.append(f"accuracy gate: {len(split):,} validation samples of {macs / 1e6:.0f} M multiply-adds "
                            f"each are over the {allowed:,} an emulated {cpu} run takes; this host's kernels judge "
                            "them")
            emulate = False
        return cls(split, cpu if emulate else None, ctx.stage_dir("export"), spec.bench.timeout_s, warnings)

    def close(self) -> None:
        self.npz.unlink(missing_ok=True)

    def accuracy(self, fmt, path: Path, *, quantized: bool) -> float:
        on_host = accuracy(fmt.outputs(path, self.split.x), self.split.y)
        self.judged[path] = {"host_accuracy": on_host, "judged_on": "host"}
        if self.cpu is None or not quantized:
            return on_host
        from edgedistill.bench.emulated import FIDELITY_RUNNER_ARGS, run_emulated
        from edgedistill.bench.local import BenchFailed

        try:
            result = run_emulated(path, self.npz, cpu=self.cpu, runner_args=FIDELITY_RUNNER_ARGS,
                                  timeout_s=self.timeout_s)
        except BenchFailed as exc:
            self.warnings.append(f"accuracy gate: emulated {self.cpu} failed ({exc}); this host's kernels judge "
                                 "the rest")
            self.cpu = None
            return on_host
        self.judged[path] = {"host_accuracy": on_host, "judged_on": f"emulated {self.cpu}"}
        return float(result["accuracy"])

    def describe(self, runtime: str, device: str) -> str:
        """The kernels the gate's decisions came from, as the export line, results.json and the report say it."""
        from edgedistill.config.device import host_cpu, host_kernels

        host = f"this host ({host_cpu()}, {host_kernels()})"
        if self.cpu is not None:
            return f"{runtime} on emulated {self.cpu} (qemu: {device}'s ARM kernels); {host} beside it"
        where = f"{runtime} on {host}"
        return where if device == "host" else f"{where}, not on {device}"  # the host profile: the device is here
