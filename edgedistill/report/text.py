"""Number formatting shared by the Markdown and HTML reports."""

from __future__ import annotations

from edgedistill.lm.instructions import mix_text
from edgedistill.precisions import TABLE


def pct(value) -> str:
    """0.9694 -> '96.94%'; None -> '—'."""
    return "—" if value is None else f"{value * 100:.2f}%"


def ms(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def diff(value) -> str:
    """A parity difference: 6.0e-08."""
    return "—" if value is None else f"{value:.1e}"


def weights_size(params: int) -> str:
    """A PyTorch model's fp32 weights, for comparison with the exported files."""
    return f"{params * 4 / 1024:.1f} KiB (weights)"


# The models table of both reports: the same facts in the same order.
MODEL_COLUMNS = ("model", "format", "precision", "params", "size", "accuracy", "top-1 agreement", "max |Δ| vs PyTorch",
                 "on emulated ARM", "p50 ms", "p90 ms", "p99 ms", "predicted p90 ms on the device", "target",
                 "status")


def predicted_cell(predicted: dict | None) -> str:
    """The device's predicted p90 beside the measured one, with how it was predicted: calibrated on the device,
    scaled to published measurements on it, or the bare roofline (a lower bound)."""
    if not predicted:
        return "—"
    value = f"{predicted['p90_ms']:.3g}"
    return {"calibrated": f"{value} (calibrated)", "published": f"{value} (scaled to published)",
            "datasheet": f"≥ {value} (roofline)"}.get(predicted["source"], value)


def verdict_word(v: dict) -> str:
    """The verdict's headline word: it says 'fits' plainly only for the device's own (or the host's) figures."""
    word = {True: "FITS", False: "DOES NOT FIT", None: "CANNOT TELL"}[v["fits"]]
    return word + (" ON THIS HOST, STANDING IN" if v.get("scope") == "stand-in" and v["fits"] is not None else "")


def arm_cell(arm: dict | None) -> str:
    """The emulated-ARM fidelity of an artifact: its top-1 agreement with PyTorch on ARM kernels, and accuracy."""
    if not arm:
        return "—"
    if arm.get("status") != "ok":
        return f"failed on {arm.get('cpu')}"
    if arm.get("tokens"):  # a causal LM: greedy tokens against the PyTorch student's
        return (f"{pct(arm['top1_agreement'])} of {arm['tokens']} greedy tokens agree ({arm['cpu']}, "
                f"{arm['samples']} prompts)")
    return f"{pct(arm['top1_agreement'])} agree, {pct(arm['accuracy'])} acc ({arm['cpu']}, {arm['samples']} samples)"


def model_rows(results: dict) -> list[tuple[list[str], str | None]]:
    """The rows of the models table as plain text (teacher, student, each artifact), each with its error."""
    rows = []
    teacher, student = results.get("teacher"), results.get("student")
    if teacher:
        runs_on = "ONNX Runtime" if teacher.get("source") == "onnx" else "PyTorch"  # where its accuracy came from
        rows.append(([f"teacher {teacher['arch']}", runs_on, "fp32", f"{teacher['params']:,}",
                      weights_size(teacher["params"]), pct(teacher["accuracy"])] + ["—"] * 8 + ["ok"], None))
    if student:
        rows.append(([f"student {student['arch']}", "PyTorch", "fp32",
                      f"{student['params']:,} ({student['param_ratio']:.1%})", weights_size(student["params"]),
                      pct(student["accuracy"])] + ["—"] * 8 + ["ok"], None))
    for a in results["artifacts"]:
        lat, parity = a.get("latency_ms") or {}, a.get("parity") or {}
        precision = a["precision"] if a["precision"] == a["requested_precision"] else \
            f"{a['precision']} (asked {a['requested_precision']})"
        size = "—" if a.get("bytes") is None else f"{a['bytes'] / 1024:.1f} KiB"
        rows.append((["student", a["format"], precision, "—", size, pct(a.get("accuracy")),
                      pct(parity.get("top1_agreement")), diff(parity.get("max_abs_diff")), arm_cell(a.get("arm")),
                      ms(lat.get("p50")), ms(lat.get("p90")), ms(lat.get("p99")), predicted_cell(a.get("predicted")),
                      a.get("target") or "—", a["status"]],
                     a.get("error")))
    return rows


def selection_summary(sel: dict) -> str:
    """One sentence: which candidate was chosen on which device, predicted against measured latency."""
    chosen = sel["chosen"]
    text = (f"size: auto chose {chosen['label']} ({chosen['params']:,} params) of {len(sel['candidates'])} candidates "
            f"for {sel['device']} ({sel['format']} {sel['precision']}): predicted p90 {chosen['p90_ms']:.3g} ms")
    if sel.get("measured_p90_ms") is not None:
        text += f", measured {sel['measured_p90_ms']:.3g} ms ({sel['prediction_error']:+.0%} off)"
    return text + "."


def baseline_sentence(d: dict) -> str | None:
    """One plain sentence on what distilling gained over training the same student from labels alone, and
    which of the two the later stages got."""
    base = d.get("baseline")
    if not base:
        return None
    gain = base["gain"] * 100
    distilled = pct(base["accuracy"] + base["gain"])
    same = ("the same student trained from labels alone, with the same epochs and optimizer, reached "
            f"{pct(base['accuracy'])}")
    if d.get("shipped") == "scratch":
        why = ("distill.ship: scratch" if d.get("ship") == "scratch"
               else "it validated higher than the distilled one; distill.ship: best")
        return (f"Distillation {'did not help here' if gain <= 0 else 'gained on the test split'} ({gain:+.2f} "
                f"points): {same}, against {distilled} distilled. The scratch student is the one exported and "
                f"benchmarked ({why}).")
    if gain > 0:
        return f"Distillation gained {gain:+.2f} points: {same}, against {distilled} distilled."
    ship = ("The distilled student validated higher, so it shipped; distill.ship: scratch ships the other."
            if d.get("ship", "best") == "best" else
            "To ship the scratch student: distill.ship: best or scratch, then edgedistill run --resume.")
    return (f"Distillation did not help here ({gain:+.2f} points): {same}, against {distilled} distilled. "
            f"Try a higher temperature or alpha, more epochs, or a better teacher. {ship}")


def is_integer(precision: str | None) -> bool:
    return precision in TABLE and TABLE[precision].integer


def quantization_notes(artifacts: list[dict]) -> list[str]:
    """Plain sentences for what surprises readers: a quantized file larger (or slower) than its fp32 one."""
    fp32 = {a["format"]: a for a in artifacts if a.get("precision") == "fp32" and a.get("bytes")}
    notes = []
    for a in artifacts:
        base = fp32.get(a["format"])
        if base is None or a is base or not a.get("bytes") or not is_integer(a.get("precision")):
            continue
        larger = a["bytes"] > base["bytes"]
        slower = (a.get("latency_ms") or {}).get("p90", 0) > (base.get("latency_ms") or {}).get("p90", float("inf"))
        if larger or slower:
            what = " and ".join(w for w, yes in (("larger", larger), ("slower", slower)) if yes)
            notes.append(f"{a['format']} {a['precision']} is {what} than {a['format']} fp32 here: on a model this "
                         "small, the quantize and dequantize steps and the per-channel scales outweigh the weight "
                         "bytes saved; int8 pays off on larger models (benchmarks/README.md, Quantization).")
    return notes


def layer_pairs(mapping: dict) -> list[tuple[str, dict]]:
    """(term, pair) for every layer pair a loss term resolved (terms describe themselves; those with layer pairs
    describe a list of {student, teacher, student_shape, teacher_shape})."""
    return [(term, pair) for term, rows in (mapping or {}).items() if isinstance(rows, list)
            for pair in rows if isinstance(pair, dict) and {"student", "teacher"} <= pair.keys()]


def preprocessing_lines(results: dict) -> list[str]:
    """How to feed the model, one line each: the data's preprocessing, then each integer-input artifact's
    quantization, and the teacher's new head when it got one."""
    lines = []
    pre = results.get("preprocessing") or {}
    for key, value in pre.items():
        if isinstance(value, dict):
            value = "; ".join(f"{k} {', '.join(f'{x:.6g}' for x in v)}" for k, v in value.items())
        lines.append(f"{key}: {value}")
    for a in results["artifacts"]:
        q = a.get("input_quantization")
        if q:
            lines.append(f"{a['format']} {a['precision']} input: {q['dtype']}, round(input / {q['scale']:.6g}) + "
                         f"{q['zero_point']}")
    tuned = (results.get("teacher") or {}).get("finetune")
    if tuned:
        lines.append(f"teacher: new head {tuned['head']} fitted on this data for {tuned['epochs']} epochs (the rest "
                     f"frozen), validation accuracy {pct(tuned['val_accuracy'])}")
    return lines


def floor_sentence(results: dict) -> str | None:
    """The teacher's and the student's accuracy beside what learning nothing scores, so a teacher (or student)
    that learned nothing is seen at once."""
    teacher, student = results.get("teacher") or {}, results.get("student") or {}
    floor = teacher.get("floor")
    if not floor:
        return None
    classes = round(1 / floor["chance"])
    text = (f"Learning nothing scores {pct(floor['chance'])} on the test split (a guess among {classes} classes), "
            f"or {pct(floor['majority_share'])} (always '{floor['majority_class']}'); the teacher scores "
            f"{pct(teacher.get('accuracy'))}")
    if student.get("accuracy") is not None:
        text += f", the student {pct(student['accuracy'])}"
    return text + "." + "".join(f" Note on the data: {note}." for note in teacher.get("data_notes") or [])


GATE_COLUMNS = ("artifact", "attempt", "precision", "calibration", "weights", "kept in float", "val. accuracy",
                "on this host", "drop", "result", "why")


def gate_rows(artifacts: list[dict]) -> list[list[str]]:
    """Every attempt of the quantization gate as plain-text cells (GATE_COLUMNS): the accuracy that decided (the
    device's kernels where they judged) and this host's beside it."""
    rows = []
    for a in artifacts:
        if a["requested_precision"] == "fp32":
            continue
        for i, t in enumerate(a.get("attempts") or [], 1):
            host = t.get("host_accuracy")
            beside = pct(host) if host is not None and t.get("judged_on", "host") != "host" else "—"
            rows.append([f"{a['format']} {a['requested_precision']}", str(i), t["precision"], t["calibration"] or "—",
                         "7-bit" if t.get("reduce_range") else "—",
                         ", ".join(k.rsplit("/", 1)[-1][:40] for k in t["keep_float"]) or "—", pct(t["accuracy"]),
                         beside, pct(t["drop"]), "pass" if t["passed"] else "fail", t["reason"]])
    return rows


def limit_text(check: dict, show) -> str:
    """A budget's limit as the report prints it: a floor reads 'above X'."""
    if check["limit"] is None:
        return "—"
    return ("above " if check.get("minimum") else "") + show(check["limit"])


def metric_note(results: dict) -> str | None:
    """What "accuracy" and "latency" mean in this report, when not a classifier's top-1 and one inference."""
    if results.get("language_model"):
        return ("Accuracy in this report is the share of graded held-out prompts answered right (the teacher's own "
                "score is its row of the capability table); the accuracy-drop budget bounds the teacher's score "
                "minus the deployed model's. Latency is the time per generated token.")
    metric = results.get("metric", "accuracy")
    if metric != "accuracy":
        return (f"Accuracy in this report is the {metric} on held-out text (the teacher scores 100 %); the "
                "accuracy-drop budget bounds 1 minus it.")
    return None


CAPABILITY_COLUMNS = ("model", "instructions", "arithmetic", "facts", "all", "kept (all)", "exact match w/ teacher",
                      "ROUGE-L w/ teacher", "where")
SPEED_COLUMNS = ("artifact", "prompt tokens", "time to first token p50 ms", "decode tokens/s", "ms/token p90",
                 "peak RSS MB", "where")


def prompt_counts(lm: dict) -> str:
    """How many prompts graded the models and how many (of each kind) trained the student."""
    mix = lm.get("train_mix")
    kinds = f" ({mix_text(mix)})" if mix else ""
    learned = (f" The student learned from the teacher's answers its graders accept: {lm['answers_kept']}."
               if lm.get("answers") == "correct" else "")
    return (f"{lm.get('eval_prompts')} graded held-out prompts; {lm.get('train_prompts')} training prompts{kinds}."
            + learned)


LOST_BELOW = 0.5  # a category the student keeps less than half of is named as lost


def capability_lost(lm: dict) -> str | None:
    """One sentence naming each category the distilled student kept less than half of (None when none)."""
    from edgedistill.lm.instructions import kept

    teacher, student = lm["teacher_scores"], lm.get("student_scores")
    if not student:
        return None
    ratios = kept(student, {k: v for k, v in teacher.items() if k != "all" and k in student})
    lost = [f"{category} (the student {pct(student[category])} against the teacher's {pct(teacher[category])}, "
            f"{ratio:.0%} kept)" for category, ratio in ratios.items() if ratio is not None and ratio < LOST_BELOW]
    return f"Lost in distillation: {'; '.join(lost)}." if lost else None


def capability_rows(lm: dict) -> list[list[str]]:
    """Graded scores per category: the teacher's, the student's before and after distillation, each artifact's on
    its runtime; "kept" is the ratio to the teacher's."""
    teacher = lm["teacher_scores"]

    def row(name: str, scores: dict | None, agreement: dict | None, where: str) -> list[str]:
        scores = scores or {}
        kept = scores.get("all") / teacher["all"] if teacher.get("all") and scores.get("all") is not None else None
        return [name, *(pct(scores.get(c)) for c in ("instructions", "arithmetic", "facts", "all")),
                "—" if kept is None else f"{kept:.0%}", pct((agreement or {}).get("exact_match")),
                "—" if not agreement else f"{agreement['rouge_l']:.2f}", where]

    rows = [row("teacher", teacher, None, "PyTorch, this host")]
    if lm.get("undistilled_scores"):
        rows.append(row("student before distillation", lm["undistilled_scores"], None, "PyTorch, this host"))
    if lm.get("student_scores"):
        rows.append(row("student", lm["student_scores"], lm.get("agreement"), "PyTorch, this host"))
    rows += [row(r["artifact"], r["scores"], r["agreement"], r["target"]) for r in lm["runtimes"]]
    return rows


def speed_rows(lm: dict) -> list[list[str]]:
    """Time to first token, decode speed and memory of each artifact, and where they were measured."""
    from edgedistill.report.results import EVIDENCE

    return [[r["artifact"], str(r["generation"]["prompt_tokens"]), f"{r['generation']['ttft_ms']['p50']:.1f}",
             f"{r['generation']['decode_tokens_per_s']:.1f}", f"{r['ms_per_token_p90']:.2f}", f"{r['peak_rss_mb']:.0f}",
             f"{EVIDENCE[r['measured_on']]}: {r['target']}"] for r in lm["runtimes"]]


ANSWER_CHARS = 300  # of each answer shown side by side


def answer_columns(lm: dict) -> list[str]:
    rows = lm.get("side_by_side") or []
    return list(rows[0]) if rows else []


def answer_cell(value) -> str:
    text = "—" if value is None else " ".join(str(value).split())
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS] + "…"
