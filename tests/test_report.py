"""The verdict's budget arithmetic and the Markdown report's handling of user text and gaps."""

from __future__ import annotations

import re

import pytest

from edgedistill.report.html import _quantization as html_gate
from edgedistill.report.markdown import render_markdown
from edgedistill.report.results import verdict

BUDGETS = {"max_model_mb": 1.0, "max_ram_mb": 100.0, "max_latency_p90_ms": 5.0, "max_accuracy_drop": 0.02}


def _artifact(**kw):
    art = {"format": "onnx", "precision": "fp32", "requested_precision": "fp32", "path": "export/student.onnx",
           "bytes": 2**19, "accuracy": 0.97,
           "parity": {"max_abs_diff": 1e-6}, "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1, "std": 0},
           "peak_rss_mb": 50.0, "init_ms": 1.0, "target": "local", "status": "ok", "error": None}
    art.update(kw)
    return art


def test_fits_with_margins():
    v = verdict([_artifact()], BUDGETS, teacher_accuracy=0.98)
    assert v["fits"] is True and v["artifact"] == "onnx fp32"
    checks = {c["budget"]: c for c in v["checks"]}
    assert checks["model size"]["value"] == 0.5 and checks["model size"]["margin"] == 0.5
    assert checks["p90 latency"]["margin"] == 3.0
    assert checks["accuracy drop vs teacher"]["value"] == pytest.approx(0.01)


def test_breaks_a_budget():
    v = verdict([_artifact(latency_ms={"p50": 4, "p90": 6.5, "p99": 9, "mean": 4, "std": 1})], BUDGETS, 0.98)
    assert v["fits"] is False and "breaks 1 budget(s) (p90 latency 6.5 over 5 ms)" in v["summary"]  # named
    assert next(c for c in v["checks"] if c["budget"] == "p90 latency")["margin"] == -1.5


def test_missing_measurement_cannot_tell_and_unset_budget_is_skipped():
    v = verdict([_artifact(latency_ms=None, peak_rss_mb=None)], {**BUDGETS, "max_ram_mb": None}, 0.98)
    assert v["fits"] is None and "1 measurement(s) missing" in v["summary"]
    ram = next(c for c in v["checks"] if c["budget"] == "peak RAM")
    assert ram["passed"] is None and ram["note"] == "no budget set"


def test_best_artifact_is_named():
    slow = _artifact(format="onnx", precision="fp32", latency_ms={"p50": 9, "p90": 9, "p99": 9, "mean": 9, "std": 0})
    fast = _artifact(format="onnx", precision="int8")
    assert verdict([slow, fast], BUDGETS, 0.98)["artifact"] == "onnx int8"
    assert verdict([], BUDGETS, 0.98)["fits"] is None


def test_of_several_that_fit_the_fastest_is_named_then_the_smallest():
    def timed(fmt, precision, p90, size=2**19):
        return _artifact(format=fmt, precision=precision, bytes=size,
                         latency_ms={"p50": p90, "p90": p90, "p99": p90, "mean": p90, "std": 0})

    both_fit = [timed("onnx", "fp32", 3.0), timed("tflite", "int8", 1.5), timed("onnx", "int8", 2.0)]
    assert verdict(both_fit, BUDGETS, 0.98)["artifact"] == "tflite int8"
    same_speed = [timed("onnx", "fp32", 2.0), timed("tflite", "int8", 2.0, size=2**17)]
    assert verdict(same_speed, BUDGETS, 0.98)["artifact"] == "tflite int8"
    not_timed_last = [_artifact(format="onnx", precision="fp16", latency_ms=None, peak_rss_mb=None),
                      timed("onnx", "fp32", 4.0)]
    assert verdict(not_timed_last, BUDGETS, 0.98)["artifact"] == "onnx fp32"


def _results(**kw):
    base = {"pipeline": "p", "device": {"name": "raspberry-pi-4", "description": "Pi"},
            "verdict": verdict([_artifact()], BUDGETS, 0.98),
            "teacher": {"arch": "resnet", "params": 1000, "accuracy": 0.98},
            "student": {"arch": "mbv2", "params": 50, "param_ratio": 0.05, "accuracy": 0.97},
            "artifacts": [_artifact()], "training": {}, "stages": {"teacher": {"status": "completed", "seconds": 1.0,
                                                                               "resumed": False, "error": None}},
            "failures": [], "environment": {"host": "h", "platform": "linux", "python": "3.11",
                                            "packages": {"torch": "2"}, "seed": 0, "config_digest": "0" * 64}}
    base.update(kw)
    return base


def test_markdown_keeps_tables_intact_with_user_text():
    md = render_markdown(_results(pipeline="a|b", failures=["bench: runner exited 4: bad | worse\nnext"]))
    assert md.startswith("# Deployment report: a\\|b → raspberry-pi-4")
    assert "- bench: runner exited 4: bad \\| worse next" in md


def _cells(line: str) -> int:
    """The cells of a Markdown table row: pipes not escaped with a backslash separate them."""
    return len(re.split(r"(?<!\\)\|", line.strip().strip("|")))


def test_every_markdown_table_has_as_many_cells_in_each_row_as_its_header():
    md = render_markdown(_results(pipeline="a|b", failures=["x | y"]))
    tables = [block for block in md.split("\n\n") if block.lstrip().startswith("|")]
    assert any("max \\|Δ\\| vs PyTorch" in t for t in tables)  # the header that once had an unescaped pipe
    for table in tables:
        rows = [line for line in table.splitlines() if line.startswith("|")]
        header, rule = _cells(rows[0]), rows[1].count("---")
        assert header == rule and all(_cells(row) == header for row in rows[2:]), table


def test_markdown_with_missing_parts():
    md = render_markdown(_results(teacher=None, student=None, artifacts=[], verdict=verdict([], BUDGETS, None),
                                  stages={"teacher": {"status": "failed", "seconds": 0.1, "resumed": False,
                                                      "error": "UserError: x"}},
                                  failures=["teacher: UserError: x"]))
    assert "CANNOT TELL" in md and "## Failures" in md and "| teacher | failed |" in md


def test_markdown_lists_gate_attempts_and_fallbacks():
    attempts = [{"precision": "int8", "calibration": "minmax", "keep_float": [], "accuracy": 0.5, "drop": 0.45,
                 "passed": False, "reason": "as requested", "path": None},
                {"precision": "fp16", "calibration": None, "keep_float": [], "accuracy": 0.95, "drop": 0.0,
                 "passed": True, "reason": "drop 45.00% > 2.00%: fall back to fp16", "path": None}]
    art = _artifact(precision="fp16", requested_precision="int8", attempts=attempts,
                    fallback="drop 45.00% > 2.00%: fall back to fp16",
                    gate_judged_on="onnxruntime on this host (AMD EPYC, AVX2), not on raspberry-pi-4")
    md = render_markdown(_results(artifacts=[art]))
    # Whose kernels the gate's accuracies are: this host's, named, never the device's.
    assert "onnx int8: judged on onnxruntime on this host (AMD EPYC, AVX2), not on raspberry-pi-4." in md
    assert "judged on onnxruntime on this host (AMD EPYC, AVX2), not on raspberry-pi-4" in html_gate(
        {"artifacts": [art]})
    assert "| onnx | fp16 (asked int8) |" in md
    assert "## Quantization gate" in md and "| onnx int8 | 1 | int8 | minmax |" in md
    assert "fall back to fp16" in md and "**fail**" in md


def test_a_quantized_file_larger_or_slower_than_fp32_is_explained():
    from edgedistill.report.text import quantization_notes

    fp32 = _artifact(bytes=20_000)
    int8 = _artifact(precision="int8", requested_precision="int8", bytes=36_000,
                     latency_ms={"p50": 0.5, "p90": 1.0, "p99": 2, "mean": 1, "std": 0})
    (note,) = quantization_notes([fp32, int8])
    assert note.startswith("onnx int8 is larger than onnx fp32 here")
    assert quantization_notes([fp32, _artifact(precision="int8", requested_precision="int8", bytes=6_000)]) == []


def test_a_stand_in_never_reads_as_the_device():
    """Figures measured on this host for a Pi say so: in the scope, the summary, every check's evidence and the
    headline; the prediction for the device and the emulated-ARM agreement are named as what they are."""
    art = _artifact(measured_on="stand-in",
                    predicted={"p90_ms": 3.14, "ram_mb": 1.0, "source": "datasheet", "lower_bound": True},
                    arm={"status": "ok", "cpu": "cortex-a72", "top1_agreement": 0.995, "accuracy": 0.96,
                         "samples": 256})
    v = verdict([art], BUDGETS, 0.98, "raspberry-pi-4")
    assert v["fits"] is True and v["fits_device"] is None and v["scope"] == "stand-in"
    assert "on this host standing in for raspberry-pi-4 (not measured on raspberry-pi-4)" in v["summary"]
    assert ("predicted p90 on raspberry-pi-4: 3.14 ms as onnx fp32 (uncalibrated roofline, a lower bound)"
            in v["summary"])
    assert "on emulated cortex-a72 (ARM kernels, qemu): 99.5% top-1 agreement" in v["summary"]
    evidence = {c["budget"]: c["evidence"] for c in v["checks"]}
    assert evidence == {"model size": "the artifact's file size",
                        "peak RAM": "measured on this host, standing in for the device",
                        "p90 latency": "measured on this host, standing in for the device",
                        "accuracy drop vs teacher": "measured on this host, standing in for the device"}
    md = render_markdown({**_results(), "verdict": v, "artifacts": [art]})
    assert "FITS ON THIS HOST, STANDING IN" in md and "✅" not in md
    assert "99.50% agree, 96.00% acc (cortex-a72, 256 samples)" in md
    assert "| ≥ 3.14 (roofline) |" in md and "predicted p90 ms on the device" in md  # beside the host's p90
    published = {**art, "predicted": {**art["predicted"], "source": "published", "caveat": "far from them"}}
    v = verdict([published], BUDGETS, 0.98, "raspberry-pi-4")
    assert ("3.14 ms as onnx fp32 (the roofline scaled to published measurements on the device; far from them)"
            in v["summary"])
    assert "| 3.14 (scaled to published) |" in render_markdown({**_results(), "verdict": v, "artifacts": [published]})


def test_only_the_device_s_own_figures_make_it_fit_the_device():
    v = verdict([_artifact(measured_on="device")], BUDGETS, 0.98, "raspberry-pi-4")
    assert v["fits_device"] is True and v["scope"] == "device"
    assert v["summary"] == "onnx fp32 fits every budget on raspberry-pi-4, measured on the device"
    assert {c["evidence"] for c in v["checks"]} == {"the artifact's file size", "measured on the device"}
    assert verdict([_artifact(measured_on="device", peak_rss_mb=500.0)], BUDGETS, 0.98)["fits_device"] is False


def test_a_failed_device_benchmark_leaves_no_device_scope():
    failed = _artifact(measured_on="device", latency_ms=None, peak_rss_mb=None, status="failed",
                       error="device dropped off")
    v = verdict([failed], BUDGETS, 0.98, "raspberry-pi-4")
    assert v["scope"] is None and v["fits_device"] is None and v["fits"] is None
    v = verdict([{**failed, "bytes": 2**22}], BUDGETS, 0.98, "raspberry-pi-4")  # too large, and unmeasured
    assert v["scope"] is None and "(no benchmark measured it: device dropped off)" in v["summary"]


def test_compared_runs_keep_their_table_whatever_the_folder_names():
    from edgedistill.report.compare import render_compare_markdown

    row = {"run": "runs/a\nb|c", "pipeline": "p", "device": "d", "verdict": "fits", "artifact": None, "bytes": None,
           "accuracy": None, "p90_ms": None}
    lines = render_compare_markdown([row]).strip().splitlines()
    assert len(lines) == 5 and _cells(lines[-1]) == _cells(lines[2]) == 8


def test_the_models_table_keeps_its_cells_on_one_line_and_scrolls_when_wide():
    from edgedistill.report.html import html_table

    table = html_table(["target", "status"], [["ssh://pi@raspberrypi.local:22 (the device)", "failed"]], nowrap=True)
    assert table.startswith("<div class=scroll><table class=nowrap>") and table.endswith("</table></div>")
    assert html_table(["a"], [["b"]]).startswith("<div class=scroll><table>")  # other tables wrap as before


FLOOR = {"chance": 0.5, "majority_class": "functional", "majority_share": 0.6875}


def test_a_student_at_chance_level_never_fits():
    """Every budget met, but the student scores what always answering the majority class scores: no "fits"."""
    loose = {**BUDGETS, "max_accuracy_drop": 1.0}  # a budget that cannot fail (the 20-photo smoke pipeline's)
    v = verdict([_artifact(accuracy=0.6875)], loose, teacher_accuracy=0.9, floor=FLOOR)
    assert v["fits"] is False
    assert "accuracy above chance level: 0.688 not above 0.688" in v["summary"]
    floor = next(c for c in v["checks"] if c["budget"] == "accuracy above chance level")
    assert floor["passed"] is False and "always 'functional'" in floor["note"]
    assert verdict([_artifact(accuracy=0.9)], loose, 0.9, floor=FLOOR)["fits"] is True
    assert verdict([_artifact(accuracy=0.0)], loose, 0.9)["fits"] is True  # no floor known: the budgets alone


def test_the_report_puts_the_teacher_beside_learning_nothing():
    results = _results(verdict=verdict([_artifact(accuracy=0.9)], BUDGETS, 0.9, floor=FLOOR),
                       teacher={"arch": "t", "params": 10, "accuracy": 0.91, "source": "checkpoint", "floor": FLOOR})
    text = render_markdown(results)
    assert ("Learning nothing scores 50.00% on the test split (a guess among 2 classes), or 68.75% (always "
            "'functional'); the teacher scores 91.00%") in text
    assert "| accuracy above chance level | above 68.75% |" in text
