"""report.html: one self-contained file (inline CSS and SVG figures, no scripts, no fetches).

Every string that came from the user or a tool (pipeline name, class names, paths, errors) is escaped.
"""

from __future__ import annotations

from html import escape

from edgedistill.report import figures
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

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left}
th{background:#f5f5f5}.verdict{font-size:1.25em;padding:.7em 1em;border-radius:6px;margin:1em 0}
.fits{background:#e6f4ea;border:1px solid #34a853}.nofit{background:#fce8e6;border:1px solid #ea4335}
.unknown{background:#fef7e0;border:1px solid #fbbc04}.pass{color:#188038}.fail{color:#c5221f;font-weight:bold}
.muted{color:#777}figure{margin:1em 0}figcaption{font-size:.9em;color:#555}svg{width:100%;max-width:960px;height:auto}
code{background:#f5f5f5;padding:0 .2em}.scroll{overflow-x:auto}table.nowrap td{white-space:nowrap}
table.nowrap td .muted{white-space:normal;display:inline-block;min-width:16em}
"""

# A causal LM's report adds LM_SECTIONS after "models".
LM_SECTIONS = ("capability", "speed", "answers")
SECTIONS = ("verdict", "models", "feeding", "figures", "distillation", "quantization", "selection", "stages",
            "failures", "environment")


def e(value) -> str:
    return escape("—" if value is None else str(value), quote=True)


def html_table(headers: list[str], rows: list[list[str]], nowrap: bool = False) -> str:
    """`rows` hold already-escaped cell HTML. A table wider than the page scrolls inside its own box; with
    `nowrap`, its cells keep to one line (notes in them, class muted, still wrap)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    table = "<table class=nowrap>" if nowrap else "<table>"
    return f"<div class=scroll>{table}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def render_html(results: dict) -> str:
    lm = results.get("language_model")
    parts = [_verdict(results), _models(results), *(_language_model(lm) if lm else []), _feeding(results),
             _figures(results), _distillation(results),
             _quantization(results), _selection(results), _stages(results), _failures(results), _environment(results)]
    title = f"Deployment report: {results['pipeline']} → {results['device']['name']}"
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style></head>"
            f"<body><h1>{e(title)}</h1>{''.join(parts)}</body></html>\n")


def _section(key: str, title: str, body: str) -> str:
    return f"<section id=\"{key}\"><h2>{e(title)}</h2>{body}</section>"


def _verdict(r: dict) -> str:
    v = r["verdict"]
    stand_in = v.get("scope") == "stand-in"
    css = {True: "unknown" if stand_in else "fits", False: "nofit", None: "unknown"}[v["fits"]]
    word = verdict_word(v)
    rows = []
    for c in v["checks"]:
        as_pct = c["budget"].startswith("accuracy")
        show = pct if as_pct else (lambda x, u=c["unit"]: "—" if x is None else f"{x:.3f} {u}")
        result = {True: "<span class=pass>pass</span>", False: "<span class=fail>FAIL</span>",
                  None: f"<span class=muted>{e(c['note'])}</span>"}[c["passed"]]
        rows.append([e(c["budget"]), e(limit_text(c, show)), e(show(c["value"])), e(show(c["margin"])), result,
                     e(c.get("evidence") or "—")])
    table = html_table(["budget", "limit", "measured", "margin", "result", "evidence"], rows) if rows else ""
    floor = floor_sentence(r)
    floor = f"<p>{e(floor)}</p>" if floor else ""
    return _section("verdict", "Verdict", f"<div class=\"verdict {css}\"><b>{e(word)}</b> — {e(v['summary'])}."
                    f"</div><p>Device: {e(r['device']['description'])}.</p>{floor}{table}")


def _models(r: dict) -> str:
    rows = [[e(c) for c in cells[:-1]] + [e(cells[-1]) + (f"<br><span class=muted>{e(error)}</span>" if error else "")]
            for cells, error in model_rows(r)]
    note = f"<p>{e(metric_note(r))}</p>" if metric_note(r) else ""
    notes = "".join(f"<p class=muted>{e(n)}</p>" for n in quantization_notes(r["artifacts"]))
    table = html_table(list(MODEL_COLUMNS), rows, nowrap=True)  # the target cell wrapped to six lines
    return _section("models", "Teacher, student and artifacts", note + table + notes)


def _language_model(lm: dict) -> list[str]:
    """The capability, speed and answers sections of a causal LM's report; every answer is escaped text."""
    ppl = lm.get("perplexity")
    capability = (f"<p>{e(lm.get('prompts_how'))}</p><p>{e(prompt_counts(lm))}</p>"
                  + html_table(list(CAPABILITY_COLUMNS), [[e(c) for c in row] for row in capability_rows(lm)])
                  + (f"<p><b>{e(capability_lost(lm))}</b></p>" if capability_lost(lm) else "")
                  + (f"<p>Perplexity of the teacher's held-out answers: student {ppl['student']:.2f}, teacher "
                     f"{ppl['teacher']:.2f}.</p>" if ppl else ""))
    speed = (html_table(list(SPEED_COLUMNS), [[e(c) for c in row] for row in speed_rows(lm)]) if lm["runtimes"]
             else "<p class=muted>No artifact generated on the target.</p>")
    columns = answer_columns(lm)
    answers = (html_table(columns, [[e(answer_cell(row.get(c))) for c in columns] for row in lm["side_by_side"]])
               if columns else "<p class=muted>No answers recorded.</p>")
    return [_section("capability", "Capability kept", capability), _section("speed", "Generation speed", speed),
            _section("answers", "Answers side by side", answers)]


def _feeding(r: dict) -> str:
    lines = preprocessing_lines(r)
    body = "<ul>" + "".join(f"<li>{e(line)}</li>" for line in lines) + "</ul>" if lines else \
        "<p>Not known: the export stage did not complete.</p>"
    return _section("feeding", "Feeding the model", body)


def figure_block(svg: str | None, caption: str, missing: str) -> str:
    if svg is None:
        return f"<p class=muted>{e(missing)}</p>"
    return f"<figure>{svg}<figcaption>{e(caption)}</figcaption></figure>"


def _figures(r: dict) -> str:
    samples = {f"{a['format']} {a['precision']}": a.get("latency_samples_ms") or [] for a in r["artifacts"]}
    body = "".join([
        figure_block(figures.accuracy_latency(r), "Accuracy against p90 latency; outlined points form the Pareto "
                     "front; dotted lines are the latency budget and the accuracy floor (teacher minus the allowed "
                     "drop).",
                "No accuracy-latency chart: no artifact was benchmarked."),
        figure_block(figures.size_bars(r), "Artifact sizes against the size budget.",
                     "No size chart: no artifact exported."),
        figure_block(figures.training_curves(r), "Validation accuracy per epoch" + (
            "; shading marks the distillation phases." if len((r.get("distillation") or {}).get("phases") or []) > 1
            else "."), "No training curves: no training ran."),
        figure_block(figures.latency_distributions(samples),
                     "Latency of the timed runs (box: quartiles; whiskers: 1.5 IQR).",
                "No latency distributions: no benchmark samples."),
    ])
    return _section("figures", "Figures", body)


def _distillation(r: dict) -> str:
    d = r.get("distillation")
    if not d:
        return _section("distillation", "Distillation", "<p class=muted>Distillation did not complete.</p>")
    logit_kd = (f"; {e(d['divergence'])} at temperature {e(d['temperature'])}, alpha {e(d['alpha'])}"
                if d.get("divergence") else "")
    best = f"best epoch {e(d['best_epoch'])} of {e(d['epochs'])}" if d.get("best_epoch") else f"{e(d['epochs'])} epochs"
    text = f"<p>Terms {e(', '.join(d['terms']))}{logit_kd}; {best}; teacher outputs: {e(d['teacher_cache'])}.</p>"
    sentence = baseline_sentence(d)
    if sentence:
        text += f"<p><strong>{e(sentence)}</strong></p>"
    text += "".join(f"<p class=unknown>Note on the teacher: {e(flag)}.</p>" for flag in d.get("teacher_flags") or [])
    mapping = d.get("mapping") or {}
    pairs = [[e(term), e(p["student"]), e(p["teacher"]), e(tuple(p["student_shape"])), e(tuple(p["teacher_shape"]))]
             for term, p in layer_pairs(mapping)]
    if pairs:
        text += html_table(["term", "student layer", "teacher layer", "student shape", "teacher shape"], pairs)
        text += f"<p>Adapters: {mapping['adapter_params']:,} parameters, dropped at export.</p>"
    if len(d.get("phases") or []) > 1:
        text += html_table(["phase", "epochs", "alpha", "LR scale", "examples"], [
            [e(p["name"]), e(f"{p['epochs'][0]}–{p['epochs'][1]}"), e(p["alpha"]), e(p["lr_scale"]),
             e(f"easiest {p['easy_fraction']:.0%}" if p["easy_fraction"] else "all")] for p in d["phases"]])
    prog = d.get("progressive") or {}
    if prog.get("used"):
        text += "<p>Teacher assistants: " + e(", ".join(
            f"width ×{a['width']:.3g} ({a['params']:,} params, {pct(a['accuracy'])}, {a['seconds']:.1f} s)"
            for a in prog["assistants"])) + f"; extra cost {prog['extra_seconds']:.1f} s.</p>"
    return _section("distillation", "Distillation", text)


def _quantization(r: dict) -> str:
    rows = [[e(c) for c in row[:9]] + [f"<span class={row[9]}>{row[9]}</span>", e(row[10])]
            for row in gate_rows(r["artifacts"])]
    body = html_table(list(GATE_COLUMNS), rows) if rows else "<p class=muted>No quantized artifact was requested.</p>"
    body += "".join(f"<p class=muted>{e(a['format'])} {e(a['requested_precision'])}: judged on "
                    f"{e(a['gate_judged_on'])}.</p>" for a in r["artifacts"] if a.get("gate_judged_on"))
    return _section("quantization", "Quantization gate", body)


def _selection(r: dict) -> str:
    sel = r.get("selection")
    if not sel:
        return _section("selection", "Student selection",
                        "<p class=muted>The pipeline named its student (size: fixed); no candidates were ranked.</p>")
    rows = [["→" if c["label"] == (sel["chosen"] or {}).get("label") else "", e(c["label"]), e(f"{c['params']:,}"),
             e(f"{c['size_mb']:.3g}"), e(f"{c['p90_ms']:.3g}"), e(f"{c['ram_mb']:.3g}"),
             "yes" if c["fits"] else e("no: " + "; ".join(c["breaks"]))] for c in sel["candidates"]]
    notes = [selection_summary(sel), sel["predictor_note"], sel["excluded"], f"Tie-break: {sel['tie_break']}."]
    body = "".join(f"<p>{e(n)}</p>" for n in notes if n)
    return _section("selection", "Student selection", body + html_table(
        ["", "candidate", "params", f"size MB ({sel['precision']})", "predicted p90 ms", "RAM MB", "fits"], rows))


def _stages(r: dict) -> str:
    rows = [[e(n), e(s["status"]), e(None if s["seconds"] is None else f"{s['seconds']:.1f}"),
             "kept from an earlier run" if s["resumed"] else e(s["error"] or "")] for n, s in r["stages"].items()]
    return _section("stages", "Stages", html_table(["stage", "status", "seconds", "note"], rows))


def _failures(r: dict) -> str:
    if not r["failures"]:
        return _section("failures", "Failures", "<p class=pass>None.</p>")
    return _section("failures", "Failures", "<ul>" + "".join(f"<li>{e(f)}</li>" for f in r["failures"]) + "</ul>")


def _environment(r: dict) -> str:
    env = r["environment"]
    rows = [["device profile", e(r["device"]["description"])], ["host", e(f"{env['host']}, {env['platform']}")],
            ["python", e(env["python"])],
            ["trained on", e(", ".join(f"{k}: {v}" for k, v in (env.get("training") or {}).items()) or None)],
            ["packages", e(", ".join(f"{k} {v}" for k, v in env["packages"].items() if v))],
            ["measured on", e(", ".join(f"{k}: {v}" for k, v in (env.get("device_info") or {}).items()) or None)],
            ["seed", e(env["seed"])], ["config digest", f"<code>{e(env['config_digest'])}</code>"],
            ["generated", e(r["generated_at"])]]
    table = "<table><tbody>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</tbody></table>"
    return _section("environment", "Environment", table)  # a key-value table: no (empty) header row
