"""report.md: the verdict first, then what was traded for it."""

from __future__ import annotations

from edgedistill.report.text import (
    CAPABILITY_COLUMNS,
    GATE_COLUMNS,
    MODEL_COLUMNS,
    SPEED_COLUMNS,
    answer_cell,
    answer_columns,
    baseline_sentence,
    capability_lost,
    capability_rows,
    floor_sentence,
    gate_rows,
    layer_pairs,
    limit_text,
    metric_note,
    model_rows,
    pct,
    preprocessing_lines,
    prompt_counts,
    quantization_notes,
    selection_summary,
    speed_rows,
    verdict_word,
)


def _fmt(value, spec: str = "", none: str = "—") -> str:
    if value is None:
        return none
    return format(value, spec) if spec else str(value)


def _escape(text) -> str:
    """Table cells hold user text (names, errors): keep pipes and newlines from breaking the table."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(results: dict) -> str:
    v = results["verdict"]
    stand_in = v.get("scope") == "stand-in"
    mark = {True: "☑️" if stand_in else "✅", False: "❌", None: "⚠️"}[v["fits"]] + " " + verdict_word(v)
    device = results["device"]
    lines = [f"# Deployment report: {_escape(results['pipeline'])} → {_escape(device['name'])}", "",
             f"**{mark}** — {_escape(v['summary'])}.", ""]
    for note in (metric_note(results), floor_sentence(results)):
        if note:
            lines += [_escape(note), ""]
    if v["checks"]:
        lines += ["| budget | limit | measured | margin | result | evidence |", "|---|---|---|---|---|---|"]
        for c in v["checks"]:
            unit = c["unit"]
            as_pct = c["budget"].startswith("accuracy")
            show = pct if as_pct else (lambda x, unit=unit: f"{x:.3f} {unit}" if x is not None else "—")
            result = {True: "pass", False: "**FAIL**", None: c["note"]}[c["passed"]]
            lines.append(f"| {c['budget']} | {limit_text(c, show)} | "
                         f"{show(c['value'])} | {show(c['margin']) if c['margin'] is not None else '—'} | {result} | "
                         f"{c.get('evidence') or '—'} |")
        lines.append("")
    lines += ["## Models", "", "| " + " | ".join(_escape(c) for c in MODEL_COLUMNS) + " |",
              "|" + "---|" * len(MODEL_COLUMNS)]
    lines += ["| " + " | ".join(_escape(c) for c in cells) + " |" for cells, _ in model_rows(results)]
    lines.append("")
    lines += [f"{note}\n" for note in quantization_notes(results["artifacts"])]
    lines += _language_model(results.get("language_model"))
    feeding = preprocessing_lines(results)
    if feeding:
        lines += ["## Feeding the model", ""] + [f"- {_escape(line)}" for line in feeding] + [""]
    lines += _selection(results.get("selection"))
    lines += _distillation(results.get("distillation"), results["training"].get("distill"))
    lines += _gate(results["artifacts"])
    lines += ["## Stages", "", "| stage | status | seconds | note |", "|---|---|---|---|"]
    for name, s in results["stages"].items():
        note = "kept from an earlier run (--resume)" if s["resumed"] else _escape(s["error"] or "")
        lines.append(f"| {name} | {s['status']} | {_fmt(s['seconds'], '.1f')} | {note} |")
    lines.append("")
    if results["failures"]:
        lines += ["## Failures", ""] + [f"- {_escape(f)}" for f in results["failures"]] + [""]
    env = results["environment"]
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    lines += ["## Environment", "", f"- device profile: {_escape(device['description'])}",
              f"- host: {_escape(env['host'])}, {_escape(env['platform'])}, Python {env['python']}",
              f"- trained on: {_escape(', '.join(f'{k}: {v}' for k, v in (env.get('training') or {}).items()) or '—')}",
              f"- packages: {packages}", f"- seed {env['seed']}, config digest `{env['config_digest'][:16]}`", ""]
    return "\n".join(lines)


def _table(headers, rows) -> list[str]:
    return ["| " + " | ".join(_escape(h) for h in headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(_escape(c) for c in row) + " |" for row in rows), ""]


def _language_model(lm: dict | None) -> list[str]:
    """Capability kept, generation speed and a few answers side by side, for a causal LM pipeline."""
    if not lm:
        return []
    lines = ["## Capability kept", "", _escape(lm.get("prompts_how") or ""), "",
             _escape(prompt_counts(lm)), ""]
    lines += _table(CAPABILITY_COLUMNS, capability_rows(lm))
    if capability_lost(lm):
        lines += [f"**{_escape(capability_lost(lm))}**", ""]
    ppl = lm.get("perplexity")
    if ppl:
        lines += [f"Perplexity of the teacher's held-out answers: student {ppl['student']:.2f}, teacher "
                  f"{ppl['teacher']:.2f}.", ""]
    if lm["runtimes"]:
        lines += ["## Generation speed", ""] + _table(SPEED_COLUMNS, speed_rows(lm))
    columns = answer_columns(lm)
    if columns:
        lines += ["## Answers side by side", ""] + _table(columns, [[answer_cell(row.get(c)) for c in columns]
                                                                     for row in lm["side_by_side"]])
    return lines


def _selection(sel: dict | None) -> list[str]:
    if not sel:
        return []
    lines = ["## Student selection", "", _escape(selection_summary(sel)), "", _escape(sel["predictor_note"]), ""]
    if sel["excluded"]:
        lines += [_escape(sel["excluded"]) + ".", ""]
    lines += [f"| | candidate | params | size MB ({sel['precision']}) | predicted p90 ms | RAM MB | fits |",
              "|---|---|---|---|---|---|---|"]
    for c in sel["candidates"]:
        mark = "→" if c["label"] == (sel["chosen"] or {}).get("label") else ""
        fits = "yes" if c["fits"] else "no: " + "; ".join(c["breaks"])
        lines.append(f"| {mark} | {_escape(c['label'])} | {c['params']:,} | {c['size_mb']:.3g} | {c['p90_ms']:.3g} | "
                     f"{c['ram_mb']:.3g} | {_escape(fits)} |")
    return lines + ["", f"Tie-break: {sel['tie_break']}.", ""]


def _distillation(d: dict | None, history: list | None) -> list[str]:
    if not d or not history:
        return []
    best = max(history, key=lambda h: h.get("val_accuracy", 0))
    logit_kd = (f"; {d['divergence']} at temperature {d['temperature']}, alpha {d['alpha']}"
                if d.get("divergence") else "")
    validated = (f", best validation accuracy {pct(best.get('val_accuracy'))} at epoch {best['epoch']}"
                 if "val_accuracy" in best else "")
    lines = ["## Distillation", "",
             f"Terms {', '.join(d['terms'])}{logit_kd}; {len(history)} epochs{validated}; teacher outputs: "
             f"{d['teacher_cache']}.", ""]
    sentence = baseline_sentence(d)
    if sentence:
        lines += [sentence, ""]
    lines += [f"Note on the teacher: {_escape(flag)}." for flag in d.get("teacher_flags") or []]
    lines += [""] if d.get("teacher_flags") else []
    if len(d.get("phases") or []) > 1:
        lines += ["| phase | epochs | alpha | LR scale | examples |", "|---|---|---|---|---|"]
        lines += [f"| {p['name']} | {p['epochs'][0]}–{p['epochs'][1]} | {p['alpha']} | {p['lr_scale']} | "
                  f"{'easiest ' + pct(p['easy_fraction']) if p['easy_fraction'] else 'all'} |" for p in d["phases"]]
        lines.append("")
    mapping = d.get("mapping") or {}
    pairs = layer_pairs(mapping)
    if pairs:
        lines += ["| term | student layer | teacher layer | student shape | teacher shape |", "|---|---|---|---|---|"]
        lines += [f"| {term} | {_escape(p['student'])} | {_escape(p['teacher'])} | {tuple(p['student_shape'])} | "
                  f"{tuple(p['teacher_shape'])} |" for term, p in pairs]
        lines += ["", f"Adapters: {mapping['adapter_params']:,} parameters, trained with the student and left out "
                  "of the export.", ""]
    prog = d.get("progressive") or {}
    if prog.get("used"):
        steps = ", ".join(f"width ×{a['width']:.3g} ({a['params']:,} params, {pct(a['accuracy'])}, "
                          f"{a['seconds']:.1f} s)" for a in prog["assistants"])
        lines += [f"Teacher assistants (width ratio {d['width_ratio']:.1f} ≥ {prog['threshold']:g}): {steps}; "
                  f"extra cost {prog['extra_seconds']:.1f} s.", ""]
    return lines


def _gate(artifacts: list[dict]) -> list[str]:
    """Every attempt of the quantization gate, for the artifacts that were quantized."""
    rows = gate_rows(artifacts)
    if not rows:
        return []
    lines = ["## Quantization gate", "",
             "Each quantized artifact is checked on the validation split against the float student; when it loses "
             "more than the allowed accuracy the next option is tried.", "",
             *[f"{_escape(a['format'])} {_escape(a['requested_precision'])}: judged on "
               f"{_escape(a['gate_judged_on'])}." for a in artifacts if a.get("gate_judged_on")], ""]
    marked = [row[:9] + ["**fail**" if row[9] == "fail" else row[9]] + row[10:] for row in rows]
    return lines + _table(GATE_COLUMNS, marked)
