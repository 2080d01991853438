"""Bench stage: each exported artifact timed by the runner on the target, with its test accuracy (a sentence
encoder's quality, its mean cosine to the teacher, comes from the export stage).

One failing cell records its status and error; the others and the report go on.
"""

from __future__ import annotations

import numpy as np

from edgedistill.bench.local import BenchFailed
from edgedistill.bench.targets import bench_threads, describe, resolve_target, run_on
from edgedistill.data import load_dataset
from edgedistill.fileio import atomic_output, atomic_write_json
from edgedistill.pipeline.engine import StageResult


def run(spec, ctx) -> StageResult:
    cfg = spec.bench
    out = ctx.stage_dir("bench")
    # A sentence encoder is timed on token feeds of the exported length; its quality was measured at export.
    tokens = spec.data.kind == "text"
    test_npz, seq_len, outputs = None, spec.export.seq_len if tokens else None, {}
    if not tokens:
        data = load_dataset(spec.data, spec.seed)
        test_npz = out / "test.npz"
        with atomic_output(test_npz) as tmp, open(tmp, "wb") as f:
            np.savez(f, x=data.test.x, y=data.test.y)
        outputs["test_data"] = test_npz
    target = resolve_target(cfg.target, ctx.device)
    threads = bench_threads(target, ctx.device, cfg.threads)
    where = describe(target, ctx.device, threads) + (f", {seq_len} tokens" if tokens else "")
    cells, warnings = [], []
    for artifact in ctx.metrics("export").get("artifacts", []):
        key = f"{artifact['format']}-{artifact['requested_precision']}"
        cell = {"format": artifact["format"], "requested_precision": artifact["requested_precision"],
                "precision": artifact["precision"], "target": where}
        if artifact.get("status") != "ok":
            cells.append({**cell, "status": "skipped", "error": "not exported"})
            continue
        try:
            with ctx.console.status(f"  benchmarking {artifact['format']} {artifact['precision']} on "
                                    f"{threads} thread(s)…"):
                result = run_on(target, ctx.device, ctx.output("export", key), test_npz, threads=threads,
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
        ctx.console.print(f"  {artifact['format']} {artifact['precision']} on {result['device'].get('hostname')}: "
                          f"p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f} ms, p99 {lat['p99']:.3f} ms, "
                          f"{'cosine' if tokens else 'accuracy'} {quality:.2%}, "
                          f"peak RSS {result['peak_rss_mb']:.0f} MB")
        cells.append({**cell, "status": "ok", "latency_ms": lat, "accuracy": quality,
                      "peak_rss_mb": result["peak_rss_mb"], "init_ms": result["init_ms"], "threads": threads,
                      "samples_ms": result.get("samples_ms", []),
                      "runtime": result["runtime"], "device": result["device"]})
    return StageResult(outputs=outputs, metrics={"cells": cells, "target": where}, warnings=warnings)
