"""Bench stage: each exported artifact timed by the runner on the target, with its test accuracy (a sentence
encoder's quality, its mean cosine to the teacher, comes from the export stage).

One failing cell records its status and error; the others and the report go on.
"""

from __future__ import annotations

import os

import numpy as np

from edgedistill.bench.local import BenchFailed
from edgedistill.bench.targets import get_target
from edgedistill.data import load_dataset, stratified_indices
from edgedistill.errors import UserError
from edgedistill.fileio import atomic_output, atomic_write_json
from edgedistill.pipeline.engine import StageResult


def run(spec, ctx) -> StageResult:
    cfg = spec.bench
    out = ctx.stage_dir("bench")
    # A sentence encoder is timed on token feeds of the exported length; its quality was measured at export.
    tokens = spec.data.kind == "text"
    test_npz, seq_len, outputs, shipped = None, spec.export.seq_len if tokens else None, {}, {}
    if not tokens:
        data = load_dataset(spec.data, spec.seed)
        test_npz = out / "test.npz"
        shipped = ship_test_split(data, test_npz, spec.seed)
        if shipped["samples"] < shipped["of"]:
            ctx.console.print(f"  accuracy on the target: {shipped['samples']:,} of the {shipped['of']:,} test samples "
                              f"(a seeded draw keeping each class's share; at most {MAX_TEST_MB} MB are shipped)")
        outputs["test_data"] = test_npz
    target = get_target(cfg.target, ctx.device)
    threads = target.threads(ctx.device, cfg.threads)
    where = target.describe(ctx.device, threads) + (f", {seq_len} tokens" if tokens else "")
    measured_on = target.evidence(ctx.device)
    arm_cpu = emulation_cpu(cfg.emulate, ctx.device, tokens)  # before any work: `on` without a CPU stops here
    student = None if tokens else load_student(spec, ctx)
    predictions = {} if tokens else device_predictions(spec, ctx, student, data.input_shape)
    cells, warnings = [], []
    for artifact in ctx.metrics("export").get("artifacts", []):
        key = f"{artifact['format']}-{artifact['requested_precision']}"
        cell = bench_cell(artifact, where, measured_on, predictions.get((artifact["format"], artifact["precision"])))
        if artifact.get("status") != "ok":
            cells.append({**cell, "status": "skipped", "error": "not exported"})
            continue
        try:
            with ctx.console.status(f"  benchmarking {artifact['format']} {artifact['precision']} on "
                                    f"{threads} thread(s)…"):
                result = target.run(ctx.device, ctx.output("export", key), test_npz, threads=threads,
                                warmup_runs=cfg.warmup_runs, warmup_s=cfg.warmup_s, runs=cfg.runs,
                                min_time_s=cfg.min_time_s, timeout_s=cfg.timeout_s, trust_new_host=cfg.trust_new_host,
                                ssh_config=ctx.ssh_config, seq_len=seq_len)
        except BenchFailed as exc:
            cells.append({**cell, "status": "failed", "error": str(exc)})
            warnings.append(f"{key}: benchmark failed: {exc}")
            continue
        path = out / f"{key}.json"
        atomic_write_json(path, result)
        outputs[key] = path
        lat = result["latency_ms"]
        quality = result["accuracy"]
        if quality is None:
            quality = (artifact.get("parity") or {}).get("accuracy")
        host = result["device"].get("hostname")
        on = {"device": f"{host} (the device)", "host": f"{host} (this host)",
              "stand-in": f"{host} (this host, standing in for {ctx.device.name})"}[measured_on]
        ctx.console.print(f"  {artifact['format']} {artifact['precision']} on {on}: "
                          f"p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f} ms, p99 {lat['p99']:.3f} ms, "
                          f"{'cosine' if tokens else 'accuracy'} {quality:.2%}, "
                          f"peak RSS {result['peak_rss_mb']:.0f} MB")
        cells.append({**cell, "status": "ok", "latency_ms": lat, "accuracy": quality,
                      "peak_rss_mb": result["peak_rss_mb"], "init_ms": result["init_ms"], "threads": threads,
                      "samples_ms": result.get("samples_ms", []),
                      "runtime": result["runtime"], "device": result["device"]})
    if arm_cpu is not None:
        emulate_artifacts(ctx, spec, arm_cpu, student, data, cells, warnings)
    return StageResult(outputs=outputs, metrics={"cells": cells, "target": where, "emulated_cpu": arm_cpu,
                                                 "test_data": shipped}, warnings=warnings)


def bench_cell(artifact: dict, where: str, measured_on: str, predicted: dict | None) -> dict:
    """The start of an artifact's benchmark cell, for every kind of pipeline: what it is and where it runs."""
    return {"format": artifact["format"], "requested_precision": artifact["requested_precision"],
            "precision": artifact["precision"], "target": where, "measured_on": measured_on, "predicted": predicted}


MAX_TEST_MB = 256  # test inputs shipped to the target: all of a small split, a stated sample of a large one


def ship_test_split(data, path, seed: int) -> dict:
    """The preprocessed test split (or a class-stratified sample of at most MAX_TEST_MB) as the .npz the runner
    reads; says how many of how many samples it holds."""
    from edgedistill.data import stratified_indices

    per_sample = int(np.prod(data.input_shape)) * 4
    keep = min(len(data.test), max(1, int(MAX_TEST_MB * 2**20 // per_sample)))
    picked = stratified_indices(data.test.y, keep, seed)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, x=data.test.x[picked], y=data.test.y[picked])
    return {"samples": int(keep), "of": len(data.test)}


def emulation_cpu(mode: str, device, tokens: bool) -> str | None:
    """The ARM CPU to emulate for the fidelity column, or None: `emulate: on` asks for it (a device without an
    arm_cpu is then an error), `auto` takes it when the device is ARM and qemu-user is installed."""
    from edgedistill.bench import emulated
    from edgedistill.errors import StageFailed

    if mode == "off" or tokens:  # token models: the export stage measured their quality
        return None
    cpu = device.hardware.arm_cpu
    if mode == "on" and cpu is None:
        raise StageFailed(f"bench.emulate: on, but device {device.name!r} names no hardware.arm_cpu")
    if mode == "auto" and (cpu is None or not emulated.available()):
        return None
    return cpu


def load_student(spec, ctx):
    from edgedistill.models.io import ArchInfo, load_weights, pipeline_families

    model = ArchInfo.load(ctx.output("student", "arch"), pipeline_families(spec)).build()
    load_weights(model, ctx.output("distill", "weights"))
    return model.eval()


def device_predictions(spec, ctx, student, input_shape) -> dict[tuple[str, str], dict]:
    """The latency predictor's p90 and RAM for the student on the device, per (format, precision): calibrated
    when the device has a calibration for it, else the datasheet roofline (a lower bound)."""
    from edgedistill.config.device import device_path
    from edgedistill.cost import model_cost
    from edgedistill.latency.calibration import predictor_for

    predictor, _ = predictor_for(ctx.device, device_path(spec.device))
    cost = model_cost(student, tuple(input_shape))
    out = {}
    for artifact in ctx.metrics("export").get("artifacts", []):
        key = (artifact["format"], artifact["precision"])
        prediction = predictor.predict(cost, *key)
        out[key] = {"p90_ms": prediction.p90_ms, "ram_mb": prediction.ram_mb, "source": prediction.source,
                    "lower_bound": prediction.source == "datasheet", "caveat": predictor.caveat(cost, *key)}
    return out


def emulate_artifacts(ctx, spec, cpu: str, student, data, cells: list[dict], warnings: list[str]) -> None:
    """Each exported artifact on the emulated ARM CPU: its accuracy there and its agreement with the PyTorch
    student, recorded in its cell (`arm`), beside the host's parity from the export stage. The artifacts run at
    once, one qemu process per core (each is single-threaded; the timing of these runs is not used)."""
    from concurrent.futures import ThreadPoolExecutor

    from edgedistill.bench import emulated
    from edgedistill.cost import model_cost
    from edgedistill.distill.trainer import predict

    # A stratified draw of the test split, as many samples as the model's size allows under emulation.
    samples = emulated.fidelity_samples(model_cost(student, tuple(data.input_shape)).macs)
    picked = stratified_indices(data.test.y, samples, spec.seed) if len(data.test) > samples \
        else np.arange(len(data.test))
    x, y = data.test.x[picked], data.test.y[picked]
    reference = predict(student, x)
    emulated.setup(ctx.console)  # built once here, before the runs that share it
    todo = [(artifact, cell) for artifact, cell in zip(ctx.metrics("export").get("artifacts", []), cells)
            if artifact.get("status") == "ok"]

    def fidelity_of(artifact: dict) -> dict | Exception:
        key = f"{artifact['format']}-{artifact['requested_precision']}"
        try:
            return emulated.arm_fidelity(ctx.output("export", key), x, y, reference, cpu=cpu,
                                         timeout_s=spec.bench.timeout_s)
        except (BenchFailed, UserError) as exc:  # UserError: the userland could not be built (tools, network)
            return exc

    with ctx.console.status(f"  {len(todo)} artifact(s) on emulated {cpu}…"), \
            ThreadPoolExecutor(max_workers=max(1, min(len(todo), os.cpu_count() or 1))) as pool:
        answers = list(pool.map(fidelity_of, [artifact for artifact, _ in todo]))
    for (artifact, cell), fidelity in zip(todo, answers):
        if isinstance(fidelity, Exception):
            cell["arm"] = {"cpu": cpu, "status": "failed", "error": str(fidelity)}
            warnings.append(f"{artifact['format']}-{artifact['requested_precision']}: emulated {cpu}: {fidelity}")
            continue
        cell["arm"] = {**fidelity, "status": "ok"}
        ctx.console.print(f"  {artifact['format']} {artifact['precision']} on emulated {cpu}: accuracy "
                          f"{fidelity['accuracy']:.2%}, top-1 agreement with PyTorch {fidelity['top1_agreement']:.2%}, "
                          f"max |Δ| {fidelity['max_abs_diff']:.1e} ({fidelity['samples']} samples)")
