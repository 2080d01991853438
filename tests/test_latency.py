"""Latency predictor, calibration file, student selection and `size: auto`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from torch import nn

from edgedistill.config.device import Budgets, device_files, load_device
from edgedistill.cost import model_cost
from edgedistill.errors import UserError
from edgedistill.latency.calibration import (
    Calibration,
    calibration_path,
    fit,
    load_calibration,
    measure_all,
    micro_models,
    quality,
    write_calibration,
)
from edgedistill.latency.predictor import DATASHEET, OVERHEADS, TERMS, Fit, LatencyPredictor, terms
from edgedistill.latency.select import Candidate, nothing_fits, rank, select
from tests.conftest import cli, tiny_pipeline_dict, write_pipeline

HOST = load_device("host")


def test_pool_layers_and_activation_bytes_by_hand():
    # conv 1->2 3x3 on 4x4: 2*16*9 = 288 MACs; reads 16 floats, writes 32. Global pool reads 32, writes 2.
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(1))
    cost = model_cost(model, (1, 4, 4))
    assert [(layer.kind, layer.macs) for layer in cost.layers] == [("conv", 288), ("pool", 0)]
    assert cost.activation_bytes("fp32") == (16 + 32 + 32 + 2) * 4
    assert cost.activation_bytes("int8") == 16 + 32 + 32 + 2


def test_datasheet_prediction_is_the_roofline_sum():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 64, 10))
    cost = model_cost(model, (3, 8, 8))
    hw = HOST.hardware
    peak_ms, bandwidth_ms = hw.peak_gflops_fp32 * 1e6, hw.memory_bandwidth_gbps * 1e6
    expected = {"conv_flops": 2 * 8 * 64 * 27 / peak_ms, "conv_act": (192 + 512) * 4 / bandwidth_ms,
                "linear_flops": 2 * 10 * 512 / peak_ms, "elementwise_act": (512 + 10) * 4 / bandwidth_ms,
                "weights": cost.params * 4 / bandwidth_ms, "op": 2, "call": 1,
                "thin_conv": 64 / (hw.clock_ghz * 1e6)}  # 3 input channels fill no vector: 64 pixels, a cycle each
    assert np.allclose(terms(cost, hw, "fp32"), [expected.get(t, 0.0) for t in TERMS])
    prediction = LatencyPredictor(hw).predict(cost, "onnx", "fp32")
    assert prediction.source == "datasheet" and prediction.ram_is_lower_bound
    assert prediction.p50_ms == pytest.approx(sum(v for k, v in expected.items() if k not in OVERHEADS))


def test_thin_convolutions_are_those_narrower_than_a_vector_register():
    # 128-bit registers hold 4 floats: a 4-channel conv fills them, a 3-channel one does not.
    neon = HOST.hardware.model_copy(update={"vector_bits": 128})
    assert neon.vector_lanes_fp32 == 4
    at = TERMS.index("thin_conv")
    for cin, thin in ((3, True), (4, False)):
        cost = model_cost(nn.Sequential(nn.Conv2d(cin, 8, 3, padding=1), nn.Conv2d(8, 8, 3, groups=8)), (cin, 6, 6))
        assert cost.layers[0].min_channels == cin and cost.layers[0].positions == 36
        assert terms(cost, neon, "fp32")[at] == pytest.approx(36 / (neon.clock_ghz * 1e6) if thin else 0.0)
    # 512-bit registers hold 16: the 8-channel conv is thin there; depthwise convolutions never count.
    avx512 = HOST.hardware.model_copy(update={"vector_bits": 512})
    cost = model_cost(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8)), (8, 6, 6))
    assert terms(cost, avx512, "fp32")[at] == pytest.approx(36 / (avx512.clock_ghz * 1e6))


def test_fit_recovers_known_coefficients():
    truth = np.linspace(0.5, 9.0, len(TERMS))
    rng = np.random.default_rng(0)
    rows = [(x, float(x @ truth)) for x in np.abs(rng.standard_normal((40, len(TERMS))))]
    coefficients, q = fit(rows)
    assert np.allclose([coefficients[t] for t in TERMS], truth, rtol=1e-6)
    assert q["within_10"] == 1.0 and q["median_abs_error"] < 1e-9 and q["models"] == 40


def test_quality_counts_within_bounds():
    q = quality([1.05, 1.15, 1.5, 0.95], [1, 1, 1, 1])
    assert q["within_10"] == 0.5 and q["within_20"] == 0.75 and q["median_abs_error"] == pytest.approx(0.1)


def test_each_artifact_keeps_its_quietest_of_interleaved_rounds():
    pytest.importorskip("onnx")
    models = [(label, model, shape) for label, model, shape in micro_models()[:2]]
    # p50 by round for each model: a burst of other work hits model a in round 1, model b in round 2.
    script = {models[0][0]: [2.0, 1.0, 1.5], models[1][0]: [1.0, 3.0, 2.0]}
    calls = []

    def bench(path):
        assert path.is_file()  # the exported artifact, still there in every round
        label = path.parent.name.removesuffix("-onnx-fp32")
        calls.append(label)
        p50 = script[label][sum(c == label for c in calls) - 1]
        return {"latency_ms": {"p50": p50, "p90": p50 + 0.5}, "peak_rss_mb": 40.0 + len(calls)}

    records = measure_all(models, formats=["onnx"], precisions=["fp32"], bench=bench, rounds=3)
    a, b = models[0][0], models[1][0]
    assert calls == [a, b, a, b, a, b]  # interleaved: one burst does not cover all of a model's rounds
    by_model = {r["model"]: r for r in records}
    assert (by_model[a]["p50_ms"], by_model[a]["p90_ms"], by_model[a]["p50_rounds_ms"]) == (1.0, 1.5, [2.0, 1.0, 1.5])
    assert (by_model[b]["p50_ms"], by_model[b]["p90_ms"]) == (1.0, 1.5)
    assert by_model[b]["peak_rss_mb"] == 46.0  # the most any round needed


def test_micro_models_are_not_student_families():
    from edgedistill.latency.calibration import calibration_models, real_size_models
    from edgedistill.models.mobilenet import Bottleneck
    from edgedistill.models.mobilenetv2 import MobileNetV2
    from edgedistill.models.resnet import ResNet

    models = micro_models()
    assert len(models) >= 30 and len({label for label, _, _ in models}) == len(models)
    assert not any(isinstance(m, (ResNet, MobileNetV2)) for _, m, _ in models)
    # The real-size ones: 96-224 px images, none built from the student families' blocks.
    real = real_size_models()
    assert len(real) == 30 and {shape[1] for *_, shape in real} <= set(range(96, 225))
    assert not any(isinstance(sub, (ResNet, MobileNetV2, Bottleneck)) for _, m, _ in real for sub in m.modules())
    assert [label for label, *_ in calibration_models("all")] == [label for label, *_ in models + real]


def test_calibrate_refuses_an_unknown_model_set(tmp_path):
    r = cli("calibrate", "--device", "host", "--models", "huge", "--output", tmp_path / "c.json")
    assert r.returncode == 2 and "--models" in r.stderr and "micro" in r.stderr and "Traceback" not in r.stderr


def _calibration(coefficients=None) -> Calibration:
    fit_ = Fit(coefficients or {**DATASHEET, "op": 0.01, "call": 0.05}, p90_over_p50=1.2, ram_base_mb=40.0, models=18,
               quality={"median_abs_error": 0.05, "within_10": 0.8, "within_20": 1.0, "models": 18})
    return Calibration("host", "ab" * 32, "2026-11-29T10:00:00+0000", "local", 2, {"machine": "x86_64"},
                       {"onnx/fp32": fit_})


def test_calibration_file_round_trip(tmp_path):
    profile = tmp_path / "mydev.yaml"
    profile.write_text(device_files()["host"].read_text())
    assert load_calibration(profile) is None
    written = write_calibration(_calibration(), calibration_path(profile), replace=False)
    assert written.name == "mydev.calibration.json"
    back = load_calibration(profile)
    assert back == _calibration()
    # The profile itself is untouched, and a second write needs replace=True.
    assert profile.read_text() == device_files()["host"].read_text()
    with pytest.raises(UserError, match="--replace"):
        write_calibration(_calibration(), written, replace=False)
    # Calibrated predictions use the fitted overheads, the p90 ratio and the runtime's base memory.
    cost = model_cost(nn.Linear(64, 10), (64,))
    p = LatencyPredictor(HOST.hardware, back.fits).predict(cost, "onnx", "fp32")
    assert p.source == "calibrated" and not p.ram_is_lower_bound
    assert p.p90_ms == pytest.approx(1.2 * p.p50_ms) and p.p50_ms > 0.06 and p.ram_mb > 40


def test_damaged_calibration_file_is_one_clear_error(tmp_path):
    profile = tmp_path / "d.yaml"
    path = calibration_path(profile)
    for text in ("{not json", json.dumps({"schema": 99}), json.dumps({**json.loads(_calibration().to_json()),
                                                                       "fits": {"onnx/fp32": {"coefficients": {}}}})):
        path.write_text(text)
        with pytest.raises(UserError, match="not a calibration file"):
            load_calibration(profile)


def _candidate(name, params, p90, breaks=()):
    return Candidate("f", float(name), 1.0, params, 0, params * 4 / 2**20, p90 / 1.1, p90, 10.0, list(breaks))


def test_rank_ties_go_to_lower_latency_then_smaller_width():
    a, b, c = _candidate(1, 1000, 2.0), _candidate(2, 1000, 1.0), _candidate(3, 1000, 1.0)
    big_but_breaks = _candidate(4, 5000, 50.0, ["max_latency_p90_ms 50 > 10"])
    assert rank([a, c, big_but_breaks, b]) == [b, c, a, big_but_breaks]


def _select(budgets: Budgets, **kw):
    return select("mobilenetv2", device=HOST, predictor=LatencyPredictor(HOST.hardware), budgets=budgets,
                  in_channels=1, num_classes=10, input_hw=(8, 8), fmt="onnx", precision="fp32",
                  widths=(0.125, 0.25, 0.5), depths=(0.5, 1.0), **kw)


def test_everything_fits_picks_the_largest():
    sel = _select(Budgets())
    assert all(c.fits for c in sel.candidates)
    assert sel.chosen.params == max(c.params for c in sel.candidates) and sel.chosen is sel.candidates[0]


def test_the_objective_picks_among_those_that_fit():
    sizes = sorted(c.size_mb for c in _select(Budgets()).candidates)
    budgets = Budgets(max_model_mb=(sizes[3] + sizes[4]) / 2)  # four candidates fit
    fitting = [c for c in _select(budgets).candidates if c.fits]
    smallest, fastest = _select(budgets, objective="smallest"), _select(budgets, objective="fastest")
    assert smallest.chosen.params == min(c.params for c in fitting) and smallest.chosen.fits
    assert fastest.chosen.p90_ms == min(c.p90_ms for c in fitting) and fastest.chosen.fits
    assert _select(budgets).chosen.params == max(c.params for c in fitting)
    assert smallest.tie_break.startswith("smallest: fewest parameters")


def test_size_budget_excludes_the_big_ones():
    sizes = sorted(c.size_mb for c in _select(Budgets()).candidates)
    sel = _select(Budgets(max_model_mb=(sizes[2] + sizes[3]) / 2))
    assert [c.fits for c in sel.candidates].count(True) == 3
    assert sel.chosen.size_mb == sizes[2]
    assert all("max_model_mb" in c.breaks[0] for c in sel.candidates if not c.fits)


def test_nothing_fits_names_the_smallest_and_the_budget(tmp_path):
    sel = _select(Budgets(max_model_mb=1e-6))
    assert sel.chosen is None
    message = str(nothing_fits(sel))
    smallest = min(sel.candidates, key=lambda c: c.params)
    assert smallest.label in message and f"{smallest.params:,} params" in message and "max_model_mb" in message


def test_max_params_leaves_candidates_out_and_says_why():
    sel = _select(Budgets(), max_params=5000, max_params_why="test cap")
    assert all(c.params <= 5000 for c in sel.candidates) and "test cap" in sel.excluded


def test_select_cli_differs_by_device_and_exits_2_when_nothing_fits(tmp_path):
    chosen = {}
    for device in ("host", "raspberry-pi-4"):
        r = cli("select", "--device", device, "--input-shape", "3,224,224", "--max-params", "5000000", "--json")
        assert r.returncode == 0, r.stderr
        chosen[device] = json.loads(r.stdout)
    # The host has only its datasheet; the Pi 4's roofline is scaled to the latencies its profile cites.
    assert chosen["host"]["predictor"] == "datasheet" and chosen["raspberry-pi-4"]["predictor"] == "published"
    host, pi = (chosen[d]["chosen"] for d in ("host", "raspberry-pi-4"))
    assert pi["p90_ms"] > 3 * host["p90_ms"] or pi["label"] != host["label"]
    tight = tmp_path / "tight.yaml"
    tight.write_text(device_files()["host"].read_text().replace("max_latency_p90_ms: 10",
                                                                 "max_latency_p90_ms: 0.00001"))
    r = cli("select", "--device", tight, "--input-shape", "3,64,64")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: no student fits host: even the smallest candidate")
    assert "max_latency_p90_ms" in r.stderr
    bad = cli("select", "--device", "host", "--input-shape", "3,x,2")
    assert bad.returncode == 2 and "--input-shape '3,x,2'" in bad.stderr


def test_size_auto_rejects_an_explicit_width(tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(student={"family": "mobilenetv2", "size": "auto",
                                                                           "width": 0.5}))
    r = cli("validate", path)
    assert r.returncode == 2 and "student: size auto chooses depth and width; remove depth, width" in r.stderr


@pytest.mark.slow
def test_size_auto_pipeline_chooses_and_reports(tmp_path):
    spec = {**tiny_pipeline_dict(device="host", teacher={"width": 1.0}),
            "student": {"family": "mobilenetv2", "size": "auto", "max_param_ratio": 0.3}}
    path = write_pipeline(tmp_path / "p.yaml", {**spec, "report": {"formats": ["json", "md", "html"]}})
    r = cli("run", path, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "report" / "results.json").read_text())
    sel = results["selection"]
    assert sel["chosen"]["params"] == results["student"]["params"]
    assert sel["measured_p90_ms"] is not None and sel["prediction_error"] is not None
    assert all(c["params"] <= 0.3 * results["teacher"]["params"] for c in sel["candidates"])
    md = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "## Student selection" in md and "→" in md
    html = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "size: auto chose" in html and "predicted p90 ms" in html


def test_residual_additions_are_counted():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1, bias=False)

        def forward(self, x):
            return x + self.conv(x)

    cost = model_cost(Block(), (4, 2, 2))
    assert [(layer.kind, layer.input_bytes, layer.output_bytes) for layer in cost.layers] == [
        ("conv", 64, 64), ("add", 128, 64)]


def test_gates_and_unfolded_activations_are_counted_folded_ones_are_not():
    class Gated(nn.Module):  # squeeze-and-excitation's shape: x * hardsigmoid(conv(pool(x))), then hard-swish
        def __init__(self):
            super().__init__()
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 4, 1, bias=False)

        def forward(self, x):
            gated = x * nn.functional.hardsigmoid(self.fc(self.pool(x)))
            return nn.functional.hardswish(nn.functional.relu6(gated) * 0.5)

    cost = model_cost(Gated(), (4, 2, 2))
    kinds = [(layer.kind, layer.input_bytes, layer.output_bytes) for layer in cost.layers]
    # relu6 folds into the conv before it and a product with a number is no second tensor: neither counts.
    assert kinds == [("pool", 64, 16), ("conv", 16, 16), ("activation", 16, 16), ("mul", 64 + 16, 64),
                     ("activation", 64, 64)]
    at = TERMS.index("activation_act")
    bandwidth_ms = HOST.hardware.memory_bandwidth_gbps * 1e9 / 1e3
    assert terms(cost, HOST.hardware, "fp32")[at] == pytest.approx((16 + 16 + 64 + 64) / bandwidth_ms)


def _profile_with(tmp_path, references: list[dict]):
    import yaml

    data = yaml.safe_load(device_files()["raspberry-pi-4"].read_text())
    data["references"] = references
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_published_references_scale_the_roofline_by_their_median(tmp_path):
    from edgedistill.latency.calibration import predictor_for
    from edgedistill.latency.references import reference_scales
    from edgedistill.models import build_model

    source = "https://example.org/board-benchmarks"
    mnv2 = model_cost(build_model("mobilenet_v2", width=1.0, depth=1.0, in_channels=3, num_classes=1000,
                                  input_hw=(224, 224)), (3, 224, 224))
    pi4 = load_device("raspberry-pi-4")
    roofline = LatencyPredictor(pi4.hardware).predict(mnv2, "tflite", "fp32").p50_ms
    refs = [{"model": "mobilenet_v2", "precision": "fp32", "threads": 4, "latency_ms": 3 * roofline,
             "runtime": "r", "source": source},
            # measured at twice the profile's clock: counts as twice its latency at the profile's clock
            {"model": "mobilenet_v2", "precision": "fp32", "threads": 4, "latency_ms": 2.5 * roofline,
             "clock_ghz": 2 * pi4.hardware.clock_ghz, "runtime": "r", "source": source},
            {"model": "mobilenet_v2", "precision": "fp32", "threads": 4, "latency_ms": 4 * roofline,
             "runtime": "r", "source": source},
            # one thread on a four-core board: the roofline assumes every core, so it is not used
            {"model": "mobilenet_v2", "precision": "fp32", "threads": 1, "latency_ms": 100 * roofline,
             "runtime": "r", "source": source}]
    path = _profile_with(tmp_path, refs)
    device = load_device(str(path))
    scaled = reference_scales(device)
    assert set(scaled) == {"fp32"} and len(scaled["fp32"].references) == 3
    assert scaled["fp32"].factor == pytest.approx(4.0) and scaled["fp32"].max_error == pytest.approx(1 / 3)
    predictor, _ = predictor_for(device, path)
    fp32, int8 = predictor.predict(mnv2, "onnx", "fp32"), predictor.predict(mnv2, "tflite", "int8")
    assert fp32.source == "published" and fp32.p50_ms == pytest.approx(4 * roofline)
    assert int8.source == "datasheet"  # no int8 reference: the int8 roofline stays a lower bound
    # A model far smaller than the references gets a caveat; one of their size, none.
    assert predictor.caveat(mnv2, "onnx", "fp32") is None and predictor.caveat(mnv2, "tflite", "int8") is None
    tiny = model_cost(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 10)), (3, 8, 8))
    assert "the published ones 301–301 M" in predictor.caveat(tiny, "onnx", "fp32")


def test_the_bundled_pi4_predicts_its_published_mobilenets_within_their_error():
    from edgedistill.latency.calibration import predictor_for
    from edgedistill.models import build_model

    pi4 = load_device("raspberry-pi-4")
    predictor, _ = predictor_for(pi4, device_files()["raspberry-pi-4"])
    for ref in (r for r in pi4.references if r.precision == "fp32"):
        model = build_model(ref.model, width=ref.width, depth=1.0, in_channels=3, num_classes=1000,
                            input_hw=(ref.resolution, ref.resolution))
        p = predictor.predict(model_cost(model, (3, ref.resolution, ref.resolution)), "tflite", "fp32")
        assert p.source == "published"
        assert abs(p.p50_ms / ref.latency_ms - 1) <= predictor.scaled["fp32"].max_error + 1e-9
        assert ref.source.startswith("https://")


@pytest.mark.parametrize("field,value,expected", [
    ("source", "http://example.org", "source"), ("model", "resnet50", "model"), ("latency_ms", -3, "latency_ms"),
    ("precision", "fp16", "precision")])
def test_a_bad_reference_is_one_clear_error(tmp_path, field, value, expected):
    ref = {"model": "mobilenet_v2", "precision": "fp32", "threads": 4, "latency_ms": 40, "runtime": "r",
           "source": "https://example.org/x", field: value}
    with pytest.raises(UserError, match=rf"references\.0\.{expected}"):
        load_device(str(_profile_with(tmp_path, [ref])))


@pytest.mark.slow
def test_calibrate_cli_writes_next_to_the_profile_and_select_uses_it(tmp_path):
    profile = tmp_path / "mine.yaml"
    original = device_files()["host"].read_text().replace("name: host", "name: mine")
    profile.write_text(original)
    # --min-time 0.05: what is checked here is the command (file, refusal, use), not the fit's quality, which
    # benchmarks/latency_predictor.py measures at the default.
    r = cli("calibrate", "--device", profile, "--formats", "onnx", "--precisions", "fp32", "--rounds", "1",
            "--min-time", "0.05", "--models", "micro", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads((tmp_path / "mine.calibration.json").read_text())
    assert list(data["fits"]) == ["onnx/fp32"] and data["fits"]["onnx/fp32"]["models"] == len(micro_models())
    assert profile.read_text() == original
    again = cli("calibrate", "--device", profile, "--formats", "onnx", "--precisions", "fp32")
    assert again.returncode == 2 and "--replace" in again.stderr
    sel = cli("select", "--device", profile, "--json")
    assert sel.returncode == 0 and json.loads(sel.stdout)["predictor"] == "calibrated"
    out = cli("select", "--device", profile)
    assert "predictor: calibrated on" in out.stdout
