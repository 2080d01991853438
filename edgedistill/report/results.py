"""results.json: everything a report shows, gathered from the manifest of a run directory.

Schema (version 1): pipeline, device, metric (what "accuracy" measures), teacher {params, accuracy},
student {arch, params, accuracy}, training {teacher, distill: per-epoch history}, distillation {terms, mapping,
phases, teacher_cache, progressive, baseline},
artifacts [{format, precision, path, bytes, accuracy, parity, latency_ms {p50, p90, p99, mean, std},
peak_rss_mb, target, status, error}], budgets, verdict {fits, artifact, checks[]}, stages, failures,
environment. A missing stage leaves its part null and adds a line to `failures`; it never raises.
"""

from __future__ import annotations

import platform
import time
from importlib import metadata

from edgedistill.fileio import sha256_json

SCHEMA_VERSION = 1
PACKAGES = ("edgedistill", "torch", "numpy", "onnx", "onnxruntime", "scikit-learn", "pydantic")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def build_results(ctx) -> dict:
    """The results document for the run in `ctx` (a RunContext), whatever stages completed."""
    stages = ctx.manifest.stages
    bench = stages.get("bench")
    teacher, student, distill = (stages.get(n) for n in ("teacher", "student", "distill"))
    t_metrics = teacher.metrics if teacher and teacher.status == "completed" else None
    s_metrics = student.metrics if student and student.status == "completed" else None
    d_metrics = distill.metrics if distill and distill.status == "completed" else None
    artifacts = _artifacts(ctx)
    budgets = ctx.budgets.model_dump()
    return {
        "schema_version": SCHEMA_VERSION,
        "pipeline": ctx.spec.name,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_dir": str(ctx.run_dir),
        "device": {"name": ctx.device.name, "description": ctx.device.description,
                   "processor": ctx.device.hardware.processor, "cores": ctx.device.hardware.cores},
        # What "accuracy" measures: top-1 accuracy for classifiers; for a sentence encoder the mean cosine
        # of its embeddings to the teacher's (the teacher scores 1).
        "metric": (t_metrics or {}).get("metric", "accuracy"),
        "teacher": None if t_metrics is None else {
            "arch": _arch(t_metrics), "params": t_metrics["params"], "accuracy": t_metrics["accuracy"],
            "source": t_metrics["source"], "finetune": _finetune(t_metrics.get("finetune")),
            "floor": t_metrics.get("floor"), "data_notes": t_metrics.get("data_notes") or []},
        # How an app must prepare an input (the same dict is in every artifact's metadata).
        "preprocessing": (stages["export"].metrics.get("preprocessing") if "export" in stages else None),
        "student": None if s_metrics is None else {
            "arch": _arch(s_metrics), "params": s_metrics["params"], "param_ratio": s_metrics["param_ratio"],
            "accuracy": d_metrics["accuracy"] if d_metrics else None},
        "selection": _selection(s_metrics, artifacts),
        "training": {"teacher": (t_metrics or {}).get("history"), "distill": (d_metrics or {}).get("history")},
        "distillation": None if d_metrics is None else {
            key: d_metrics.get(key) for key in ("terms", "divergence", "temperature", "alpha", "epochs", "best_epoch",
                                                "mapping", "phases", "teacher_cache", "width_ratio", "progressive",
                                                "baseline", "ship", "shipped", "distilled_accuracy", "teacher_flags")},
        "artifacts": artifacts,
        # A causal LM's capability per category, generation speed and answers side by side (None otherwise).
        "language_model": _language_model(ctx, t_metrics, d_metrics, artifacts),
        "budgets": budgets,
        "verdict": verdict(artifacts, budgets, t_metrics["accuracy"] if t_metrics else None, ctx.device.name,
                           d_metrics, (t_metrics or {}).get("floor")),
        "stages": {name: {"status": rec.status, "seconds": rec.seconds, "resumed": rec.resumed, "error": rec.error}
                   for name, rec in stages.items() if name != "report"},
        "failures": [f"{name}: {rec.error}" for name, rec in stages.items() if rec.status in ("failed", "blocked")]
        + [f"{a['format']} {a['precision']}: {a['error']}" for a in artifacts if a.get("error")],
        "environment": {"host": platform.node(), "platform": platform.platform(),
                        "device_info": next((c["device"] for c in (bench.metrics.get("cells", []) if bench else [])
                                             if c.get("device")), None),
                        # Where training ran (device, precision; GPU model, memory, CUDA and driver on a GPU).
                        "training": (d_metrics or {}).get("compute") or (t_metrics or {}).get("compute"),
                        "python": platform.python_version(),
                        "packages": {p: _version(p) for p in PACKAGES},
                        "seed": ctx.spec.seed, "config_digest": sha256_json(ctx.spec.model_dump(mode="json"))},
    }


SIDE_BY_SIDE = 4  # held-out prompts whose answers the report shows


def _language_model(ctx, t_metrics: dict | None, d_metrics: dict | None, artifacts: list[dict]) -> dict | None:
    """What an instruction-following LM pipeline measured: graded scores (teacher, student, each artifact on its
    runtime), agreement with the teacher, perplexity, time to first token and tokens/s, a few answers."""
    if not t_metrics or "scores" not in t_metrics:
        return None
    import json

    from edgedistill.errors import StageFailed

    bench = ctx.manifest.stages.get("bench")
    cells = {(c["format"], c["requested_precision"]): c for c in (bench.metrics.get("cells", []) if bench else [])}
    prompts = []
    try:
        evaluation = json.loads(ctx.output("teacher", "prompts").read_text())["evaluation"]
        teacher_texts = json.loads(ctx.output("teacher", "answers").read_text())["texts"]
        student_texts = (json.loads(ctx.output("distill", "answers").read_text())["texts"] if d_metrics else [])
    except (OSError, KeyError, ValueError, TypeError, StageFailed):
        evaluation, teacher_texts, student_texts = [], [], []
    # One prompt of each category first, then the rest in order.
    order = sorted(range(len(evaluation)), key=lambda i: (i != next(
        j for j, p in enumerate(evaluation) if p["category"] == evaluation[i]["category"]), i))
    for i in order[:SIDE_BY_SIDE]:
        row = {"category": evaluation[i]["category"], "prompt": evaluation[i]["text"],
               "teacher": teacher_texts[i] if i < len(teacher_texts) else None,
               "student": student_texts[i] if i < len(student_texts) else None}
        for (fmt, precision), cell in cells.items():
            if cell.get("answers") and i < len(cell["answers"]):
                row[f"{fmt} {precision}"] = cell["answers"][i]
        prompts.append(row)
    runtime_rows = []
    for a in artifacts:
        cell = cells.get((a["format"], a["requested_precision"]), {})
        if cell.get("status") == "ok":
            runtime_rows.append({"artifact": f"{a['format']} {a['precision']}", "scores": cell["scores"],
                                 "agreement": cell["agreement"], "generation": cell["generation"],
                                 "peak_rss_mb": cell["peak_rss_mb"], "measured_on": cell["measured_on"],
                                 "ms_per_token_p90": cell["latency_ms"]["p90"],
                                 "target": cell["target"]})
    d_metrics = d_metrics or {}
    return {"teacher_scores": t_metrics["scores"], "prompts_how": t_metrics.get("prompts_how"),
            "student_scores": d_metrics.get("scores"), "undistilled_scores": d_metrics.get("undistilled"),
            "agreement": d_metrics.get("agreement"), "perplexity": d_metrics.get("perplexity"),
            "runtimes": runtime_rows, "side_by_side": prompts, "eval_prompts": t_metrics.get("eval_prompts"),
            "train_prompts": t_metrics.get("train_prompts"), "train_mix": t_metrics.get("train_mix"),
            "answers": d_metrics.get("answers"), "answers_kept": d_metrics.get("answers_kept")}


def _finetune(tuned: dict | None) -> dict | None:
    """The new head a teacher got (teacher.finetune), without its per-epoch history."""
    return None if tuned is None else {k: v for k, v in tuned.items() if k != "history"}


def _arch(metrics: dict) -> str:
    return metrics.get("arch") or f"{metrics['family']} x{metrics['width']} depth x{metrics['depth']}"


def _selection(s_metrics: dict | None, artifacts: list[dict]) -> dict | None:
    """The size-auto candidates and choice, with the chosen student's measured latency next to its prediction."""
    selection = (s_metrics or {}).get("selection")
    if not selection:
        return None
    measured = next((a["latency_ms"]["p90"] for a in artifacts if a["format"] == selection["format"]
                     and a["precision"] == selection["precision"] and a.get("latency_ms")), None)
    predicted = selection["chosen"]["p90_ms"]
    return {**selection, "measured_p90_ms": measured,
            "prediction_error": None if measured is None else predicted / measured - 1}


def _artifacts(ctx) -> list[dict]:
    """Export records joined with their benchmark cells, one row per (format, precision)."""
    export = ctx.manifest.stages.get("export")
    bench = ctx.manifest.stages.get("bench")
    cells = {(c["format"], c["requested_precision"]): c for c in (bench.metrics.get("cells", []) if bench else [])}
    rows = []
    for art in (export.metrics.get("artifacts", []) if export else []):
        cell = cells.get((art["format"], art["requested_precision"]), {})
        error = art.get("error") or cell.get("error")
        if art.get("status") == "ok" and not cell:
            error = f"not benchmarked (bench stage {bench.status if bench else 'did not run'})"
        rows.append({"format": art["format"], "precision": art["precision"],
                     "requested_precision": art["requested_precision"], "path": art.get("path"),
                     "bytes": art.get("bytes"), "parity": art.get("parity"), "fallback": art.get("fallback"),
                     "attempts": art.get("attempts", []), "input_quantization": art.get("input_quantization"),
                     "gate_judged_on": art.get("gate_judged_on"),
                     "accuracy": cell["accuracy"] if cell.get("accuracy") is not None
                     else (art.get("parity") or {}).get("accuracy"),
                     "latency_ms": cell.get("latency_ms"), "peak_rss_mb": cell.get("peak_rss_mb"),
                     "init_ms": cell.get("init_ms"), "target": cell.get("target"), "arm": cell.get("arm"),
                     "measured_on": cell.get("measured_on"), "predicted": cell.get("predicted"),
                     "latency_samples_ms": cell.get("samples_ms", []),
                     "latency_unit": (bench.metrics.get("latency_unit") if bench else None) or "ms",
                     "status": (cell.get("status", "not benchmarked") if art.get("status") == "ok"
                                else art.get("status")),
                     "error": error})
    return rows


# How a device prediction was made (latency/predictor.py Prediction.source), as the verdict says it.
PREDICTION_SOURCES = {"calibrated": "calibrated on the device",
                      "published": "the roofline scaled to published measurements on the device",
                      "datasheet": "uncalibrated roofline, a lower bound"}
# Where a figure came from, as the report says it.
EVIDENCE = {"device": "measured on the device", "host": "measured on this host",
            "stand-in": "measured on this host, standing in for the device", "file": "the artifact's file size",
            "export": "measured on this host at export (parity)"}


def _check(name: str, value, limit, unit: str, evidence: str | None) -> dict:
    check = {"budget": name, "limit": limit, "value": value, "unit": unit, "margin": None, "passed": None,
             "evidence": None if value is None else EVIDENCE[evidence]}
    if limit is None:
        return {**check, "note": "no budget set"}
    if value is None:
        return {**check, "note": "not measured"}
    return {**check, "margin": limit - value, "passed": value <= limit, "note": ""}


def floor_check(accuracy: float | None, floor: dict | None, evidence: str) -> dict:
    """Accuracy above what a model that learned nothing scores (the larger of a uniform guess and always the
    majority class): not a budget a pipeline sets, a condition of every "fits"."""
    limit = max(floor["chance"], floor["majority_share"])
    check = {"budget": "accuracy above chance level", "limit": limit, "value": accuracy, "unit": "",
             "minimum": True, "evidence": None if accuracy is None else EVIDENCE[evidence],
             "note": f"the larger of 1/classes and always '{floor['majority_class']}' on the test split"}
    if accuracy is None:
        return {**check, "margin": None, "passed": None, "note": "not measured"}
    return {**check, "margin": accuracy - limit, "passed": accuracy > limit}


def artifact_checks(artifact: dict, budgets: dict, teacher_accuracy: float | None,
                    floor: dict | None = None) -> list[dict]:
    latency = (artifact.get("latency_ms") or {}).get("p90")
    size = artifact["bytes"] / 2**20 if artifact.get("bytes") is not None else None
    acc = artifact.get("accuracy")
    drop = teacher_accuracy - acc if teacher_accuracy is not None and acc is not None else None
    where = artifact.get("measured_on") or "stand-in"
    accuracy_where = where if artifact.get("latency_ms") else "export"
    checks = [_check("model size", size, budgets.get("max_model_mb"), "MB", "file"),
              _check("peak RAM", artifact.get("peak_rss_mb"), budgets.get("max_ram_mb"), "MB", where),
              _check("p90 latency", latency, budgets.get("max_latency_p90_ms"), artifact.get("latency_unit", "ms"),
                     where),
              _check("accuracy drop vs teacher", drop, budgets.get("max_accuracy_drop"), "", accuracy_where)]
    return checks + ([floor_check(acc, floor, accuracy_where)] if floor else [])


def _amount(value: float) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def verdict(artifacts: list[dict], budgets: dict, teacher_accuracy: float | None, device: str = "the device",
            distillation: dict | None = None, floor: dict | None = None) -> dict:
    """Fits when some artifact passes every set budget; None (cannot tell) when a measurement is missing.

    `scope` says whose measurements those are: the device's, this host's (the host profile), or this host's
    standing in for the device; `fits_device` is the verdict only when the device measured it, else None. The
    summary names the scope, and for a stand-in the predicted p90 on the device and the emulated-ARM agreement.

    The artifact named is the fastest (p90) of those that fit, else of those with the fewest failed
    checks; artifacts without a latency come last, and equal ones go by size.
    """
    scored = []
    for art in artifacts:
        checks = artifact_checks(art, budgets, teacher_accuracy, floor)
        failed = sum(c["passed"] is False for c in checks)
        unknown = sum(c["passed"] is None and c["limit"] is not None for c in checks)
        scored.append((failed, unknown, art, checks))
    if not scored:
        return {"fits": None, "fits_device": None, "scope": None, "artifact": None, "checks": [],
                "summary": "no artifact to judge"}

    def rank(entry):
        failed, unknown, art, _ = entry
        p90 = (art.get("latency_ms") or {}).get("p90")
        return failed, unknown, p90 is None, p90 or 0.0, art.get("bytes") or 0

    failed, unknown, art, checks = min(scored, key=rank)
    fits = False if failed else (None if unknown else True)
    name = f"{art['format']} {art['precision']}"
    # Whose figures these are: nobody's when no benchmark measured the artifact (a device that dropped off must
    # not leave a verdict that reads as the device's).
    scope = (art.get("measured_on") or "stand-in") if art.get("latency_ms") else None
    where = {"device": f"on {device}, measured on the device", "host": "on this host",
             "stand-in": f"on this host standing in for {device} (not measured on {device})",
             None: f"(no benchmark measured it{': ' + art['error'] if art.get('error') else ''})"}[scope]
    broken = "; ".join(f"{c['budget']}{':' if c.get('minimum') else ''} {_amount(c['value'])} "
                       f"{'not above' if c.get('minimum') else 'over'} {_amount(c['limit'])}"
                       f"{c['unit'] and ' ' + c['unit']}" for c in checks if c["passed"] is False)
    summary = {True: f"{name} fits every budget {where}", False: f"{name} breaks {failed} budget(s) ({broken}) {where}",
               None: f"cannot tell: {unknown} measurement(s) missing for {name}"}[fits]
    if scope == "stand-in":
        summary += _stand_in_evidence(art, device)
    summary += _distillation_evidence(distillation)
    return {"fits": fits, "fits_device": fits if scope == "device" else None, "scope": scope, "artifact": name,
            "checks": checks, "summary": summary}


def _distillation_evidence(d: dict | None) -> str:
    """What distilling gained over the same student trained from labels alone, and which one shipped."""
    base = (d or {}).get("baseline")
    if not base:
        return ""
    points = f"{abs(base['gain']) * 100:.2f} points"
    if d.get("shipped") == "scratch":
        if base["gain"] == 0:
            return "; the scratch student shipped (it validated higher): on the test split distilling tied with it"
        verb = "gained" if base["gain"] > 0 else "lost"  # it shipped for validating higher; the test may disagree
        return f"; the scratch student shipped: distilling {verb} {points} against it"
    if base["gain"] > 0:
        return f"; distilling gained {points} over the same student from scratch"
    why = "distill.ship: distilled" if d.get("ship") == "distilled" else "the distilled one validated higher"
    return f"; distilling lost {points} on the test split against the same student from scratch ({why})"


def _stand_in_evidence(art: dict, device: str) -> str:
    """What is known of the device itself when this host stood in: the prediction, the emulated ARM run."""
    text = ""
    predicted = art.get("predicted")
    if predicted:
        how = PREDICTION_SOURCES.get(predicted["source"], predicted["source"])
        caveat = f"; {predicted['caveat']}" if predicted.get("caveat") else ""
        text += (f"; predicted p90 on {device}: {predicted['p90_ms']:.3g} ms as {art['format']} {art['precision']} "
                 f"({how}{caveat})")
    arm = art.get("arm") or {}
    if arm.get("status") == "ok" and arm.get("tokens"):
        text += (f"; on emulated {arm['cpu']} (ARM kernels, qemu): {arm['top1_agreement']:.1%} of "
                 f"{arm['tokens']} greedy tokens the PyTorch student's")
    elif arm.get("status") == "ok":
        text += (f"; on emulated {arm['cpu']} (ARM kernels, qemu): {arm['top1_agreement']:.1%} top-1 agreement "
                 f"with PyTorch, accuracy {arm['accuracy']:.2%}")
    return text
