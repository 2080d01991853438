"""Calibration: measure small models on the device's runtime, fit the predictor's coefficients, keep them.

The micro-models are plain stacks of the blocks CNN students are made of (3x3 conv, inverted residual,
downsampling stages with strided and 1x1 shortcut convolutions, linear layers, pooling) at several widths,
depths and resolutions, thin (fewer channels than a vector register holds) and wide, all sub-millisecond on a desktop
core. The real-size models are images of 96-224 px through inverted-residual stages (3x3 and 5x5 depthwise,
hard-swish, squeeze-and-excitation) and heads of up to 1,280 channels, 1-10 ms. Both are built here, never taken
from the student families, so a prediction for a student is always for a model calibration did not see; one fit
over both predicts both sizes (benchmarks/README.md, "Latency predictor at real size").

The calibration file sits next to the device profile as NAME.calibration.json. The profile itself is
never written; an existing calibration file is replaced only when asked to.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgedistill.errors import UserError
from edgedistill.fileio import atomic_write_text, sha256_file
from edgedistill.latency.predictor import TERMS, Fit, LatencyPredictor, terms

SCHEMA = 3  # 2: the thin_conv term; 3: activation_act
SUFFIX = ".calibration.json"
ROUNDS = 3  # timing rounds per artifact; the quietest counts (see measure_all)

# (kind, arguments, input shape): 46 models spanning ~1e3..1e8 MACs, 8x8 to 48x48 inputs.
MICRO_MODELS = [
    ("conv", {"channels": c, "layers": n, "residual": r}, (3, hw, hw)) for c, n, r, hw in
    ((8, 1, 0, 8), (16, 2, 0, 16), (32, 3, 0, 16), (64, 2, 0, 32), (24, 4, 0, 32), (96, 2, 0, 16),
     (16, 2, 1, 32), (48, 4, 1, 8), (32, 2, 1, 24), (128, 1, 0, 8), (8, 6, 1, 48), (40, 2, 1, 16),
     (4, 4, 1, 16), (12, 3, 1, 24))
] + [
    ("downsample", {"channels": c, "stages": s, "residual": r}, (3, hw, hw)) for c, s, r, hw in
    ((4, 2, 1, 16), (8, 3, 1, 32), (16, 2, 1, 8), (32, 2, 0, 16), (6, 3, 1, 24), (12, 2, 0, 32), (48, 2, 1, 8),
     (4, 3, 0, 48))
] + [
    ("inverted", {"channels": c, "blocks": n, "expansion": e, "residual": r}, (3, hw, hw)) for c, n, e, r, hw in
    ((8, 1, 2, 0, 8), (16, 2, 4, 0, 16), (24, 3, 6, 1, 16), (32, 2, 6, 1, 32), (12, 4, 3, 1, 32), (48, 1, 6, 0, 8),
     (8, 3, 6, 1, 48), (64, 2, 4, 1, 8), (20, 2, 6, 0, 24), (4, 2, 1, 0, 16), (16, 6, 6, 1, 16), (96, 1, 3, 1, 16))
] + [
    ("mlp", {"hidden": h, "layers": n}, (1, hw, hw)) for h, n, hw in
    ((32, 1, 8), (256, 2, 8), (512, 3, 16), (1024, 1, 16), (128, 4, 32), (2048, 2, 8),
     (64, 2, 16), (768, 2, 8), (96, 6, 8), (4096, 1, 8), (384, 3, 24), (16, 2, 32))
]


# Real-size calibration models: a 3-channel image at `hw` (96-224), a 3x3 stride-2 stem to `stem` channels,
# inverted-residual stages (expansion, output channels, depthwise kernel, stride, blocks, squeeze-excite,
# activation), an optional 1x1 head to `head` channels, global pooling and a 1000-way linear layer: the kernels
# and blocks real 224x224 students are made of (channels 8-1280, 3x3 and 5x5 depthwise, hard-swish and SE),
# 30 models of 1-10 ms on a desktop core. None is a student family at any width (the held-out check,
# benchmarks/latency_predictor.py, predicts those).
R6, HS, RE = "relu6", "hardswish", "relu"
REAL_SIZE_MODELS = [
    (224, 16, [(1, 16, 3, 1, 1, 0, R6), (6, 24, 3, 2, 2, 0, R6)], 0),
    (224, 32, [(6, 24, 3, 2, 1, 0, R6), (6, 32, 3, 2, 2, 0, R6)], 0),
    (192, 16, [(4, 24, 3, 2, 2, 0, R6), (4, 40, 5, 2, 2, 0, R6)], 0),
    (160, 24, [(6, 32, 3, 2, 3, 0, R6), (6, 64, 3, 2, 2, 0, R6)], 0),
    (128, 32, [(6, 48, 3, 2, 2, 0, R6), (6, 96, 3, 2, 3, 0, R6), (6, 160, 3, 2, 1, 0, R6)], 640),
    (96, 32, [(6, 64, 3, 2, 2, 0, R6), (6, 128, 3, 2, 2, 0, R6), (6, 256, 3, 2, 1, 0, R6)], 1280),
    (224, 16, [(4, 24, 5, 2, 1, 1, HS), (3, 40, 5, 2, 2, 1, HS)], 0),
    (160, 16, [(4.5, 24, 3, 2, 2, 0, RE), (4, 40, 5, 2, 2, 1, HS), (6, 96, 5, 2, 2, 1, HS)], 576),
    (128, 16, [(6, 40, 5, 2, 2, 1, HS), (6, 80, 3, 2, 2, 0, HS)], 960),
    (224, 48, [(3, 48, 3, 1, 1, 0, R6)], 0),
    (192, 24, [(6, 40, 5, 2, 3, 0, R6), (6, 80, 3, 2, 3, 0, R6)], 0),
    (224, 32, [(6, 64, 3, 2, 1, 0, R6), (6, 128, 3, 2, 1, 0, R6), (6, 256, 3, 2, 1, 0, R6),
               (6, 512, 3, 2, 1, 0, R6)], 1280),
    (160, 40, [(2, 40, 3, 1, 3, 0, R6)], 0),
    (128, 24, [(6, 24, 3, 1, 4, 0, R6)], 0),
    (224, 16, [(3, 16, 3, 1, 2, 1, HS)], 0),
    (96, 24, [(6, 48, 5, 1, 3, 1, HS)], 0),
    (224, 24, [(1, 24, 3, 1, 1, 0, R6)], 0),
    (128, 64, [(4, 128, 3, 2, 2, 0, R6), (4, 256, 3, 2, 2, 0, R6)], 1024),
    (192, 32, [(6, 32, 3, 1, 2, 0, HS), (6, 64, 3, 2, 2, 1, HS)], 0),
    (112, 16, [(6, 24, 3, 2, 2, 0, R6), (6, 48, 5, 2, 3, 0, R6), (6, 88, 3, 2, 3, 0, R6),
               (6, 136, 5, 2, 3, 0, R6)], 1024),
    (144, 24, [(4, 32, 3, 2, 2, 1, R6), (4, 64, 5, 2, 2, 1, R6)], 0),
    (176, 16, [(6, 24, 3, 2, 2, 0, R6), (6, 40, 3, 2, 2, 0, R6), (6, 80, 3, 2, 2, 0, R6)], 0),
    (208, 32, [(1, 16, 3, 1, 1, 0, R6)], 0),
    (96, 48, [(6, 96, 3, 2, 2, 1, HS), (6, 192, 3, 2, 2, 1, HS)], 1280),
    (160, 32, [(6, 48, 3, 2, 1, 0, R6), (6, 96, 5, 2, 2, 0, R6), (6, 192, 5, 2, 3, 0, R6)], 1280),
    (224, 8, [(6, 16, 3, 2, 2, 0, R6)], 0),
    (128, 16, [(3, 16, 3, 1, 2, 0, RE)], 0),
    (96, 16, [(4, 24, 3, 2, 2, 0, HS), (4, 48, 3, 2, 2, 1, HS), (4, 96, 3, 2, 2, 1, HS)], 768),
    (192, 16, [(6, 16, 5, 1, 1, 0, R6), (6, 32, 5, 2, 1, 0, R6)], 0),
    (144, 40, [(3, 80, 3, 2, 2, 0, R6), (3, 160, 3, 2, 2, 0, R6), (3, 320, 3, 2, 1, 0, R6)], 1280),
]


def build_real_size(hw: int, stem: int, stages: list[tuple], head: int):
    """One model of REAL_SIZE_MODELS (input 3 x hw x hw)."""
    from torch import nn

    acts = {R6: nn.ReLU6, HS: nn.Hardswish, RE: nn.ReLU}

    def conv(cin, cout, kernel=1, stride=1, groups=1, act=None):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return layers + ([acts[act]()] if act else [])

    class Gate(nn.Module):  # squeeze-and-excitation: pool, squeeze, expand, hard-sigmoid, scale
        def __init__(self, c):
            super().__init__()
            squeezed = max(8, c // 4 // 8 * 8)
            self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, squeezed, 1), nn.ReLU(),
                                    nn.Conv2d(squeezed, c, 1), nn.Hardsigmoid())

        def forward(self, x):
            return x * self.fc(x)

    class Block(nn.Module):
        def __init__(self, cin, expansion, cout, kernel, stride, se, act):
            super().__init__()
            hidden = max(8, int(cin * expansion + 4) // 8 * 8) if expansion != 1 else cin
            layers = conv(cin, hidden, act=act) if hidden != cin else []
            layers += conv(hidden, hidden, kernel, stride, hidden, act) + ([Gate(hidden)] if se else [])
            self.body = nn.Sequential(*layers, *conv(hidden, cout))
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    layers, c = conv(3, stem, 3, 2, act=R6), stem
    for expansion, cout, kernel, stride, blocks, se, act in stages:
        for i in range(blocks):
            layers.append(Block(c, expansion, cout, kernel, stride if i == 0 else 1, se, act))
            c = cout
    if head:
        layers += conv(c, head, act=R6)
        c = head
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 1000))


def real_size_models() -> list[tuple[str, object, tuple[int, ...]]]:
    """(label, model, input shape) for every real-size calibration model, in eval mode."""
    out = []
    for i, (hw, stem, stages, head) in enumerate(REAL_SIZE_MODELS):
        blocks = sum(stage[4] for stage in stages)
        label = f"real{i:02d}-{hw}px-s{stem}-b{blocks}-c{stages[-1][1]}" + (f"-h{head}" if head else "")
        out.append((label, build_real_size(hw, stem, stages, head).eval(), (3, hw, hw)))
    return out


def build_micro(kind: str, input_shape: tuple[int, int, int], **kw):
    from torch import nn

    class Residual(nn.Sequential):
        def forward(self, x):
            return x + super().forward(x)

    cin = input_shape[0]
    if kind == "mlp":
        dims = [cin * input_shape[1] * input_shape[2]] + [kw["hidden"]] * kw["layers"]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(dims[-1], 10))
    c = kw["channels"]
    if kind == "downsample":  # stages that halve the resolution and double the channels, shortcut 1x1 stride 2
        return _downsampling_stack(cin, c, kw["stages"], kw["residual"])
    wrap = Residual if kw["residual"] else nn.Sequential
    layers = [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
    if kind == "conv":
        for _ in range(kw["layers"]):
            layers.append(wrap(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()))
    else:  # inverted residual blocks: expand 1x1, depthwise 3x3, project 1x1
        hidden = c * kw["expansion"]
        for _ in range(kw["blocks"]):
            layers.append(wrap(nn.Conv2d(c, hidden, 1), nn.ReLU6(),
                               nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.ReLU6(),
                               nn.Conv2d(hidden, c, 1)))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


def _downsampling_stack(cin: int, c: int, stages: int, residual: int):
    from torch import nn

    class Stage(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(),
                                      nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout))
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, 2), nn.BatchNorm2d(cout)) if residual else None

        def forward(self, x):
            y = self.body(x)
            return (y + self.shortcut(x) if self.shortcut is not None else y).relu()

    layers: list[nn.Module] = [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
    for _ in range(stages):
        layers.append(Stage(c, 2 * c))
        c *= 2
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


def micro_models() -> list[tuple[str, object, tuple[int, ...]]]:
    """(label, model, input shape) for every calibration micro-model, in eval mode."""
    out = []
    for kind, kw, shape in MICRO_MODELS:
        label = f"{kind}-" + "-".join(f"{k[0]}{v}" for k, v in kw.items()) + f"-{shape[1]}px"
        out.append((label, build_micro(kind, shape, **kw).eval(), shape))
    return out


# (artifact path) -> runner result, as a bench target's run returns it
Bench = Callable[[Path], dict]


def export_variant(model, input_shape: tuple[int, ...], fmt: str, precision: str, workdir: Path) -> Path:
    """`model` exported to `fmt` at `precision`, for timing."""
    from edgedistill.export.formats import FORMATS

    converter = FORMATS[fmt]
    suffix = converter.suffix
    fp32 = converter.export(model, (1, *input_shape), workdir / f"fp32{suffix}", opset=17, metadata={})
    # Activation ranges for static int8: any inputs do, only the timing is measured.
    calibration_x = np.random.default_rng(0).standard_normal((16, *input_shape)).astype(np.float32)
    return converter.variant(fp32, workdir / f"{precision}{suffix}", precision, calibration_x, None, [], {})


def fit(rows: list[tuple[np.ndarray, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Non-negative least squares on relative error: every model counts alike, whatever its latency.
    Returns the coefficients by term and the in-sample quality."""
    from scipy.optimize import nnls

    x = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    coefficients, _ = nnls(x / y[:, None], np.ones(len(y)))
    return dict(zip(TERMS, map(float, coefficients))), quality(x @ coefficients, y)


def quality(predicted, measured) -> dict[str, float]:
    """Median absolute relative error and the share of predictions within ±10 % and ±20 %."""
    err = np.abs(np.asarray(predicted) / np.asarray(measured) - 1)
    return {"median_abs_error": float(np.median(err)), "within_10": float(np.mean(err <= 0.10)),
            "within_20": float(np.mean(err <= 0.20)), "models": int(len(err))}


@dataclass
class Calibration:
    device: str
    profile_sha256: str
    created: str
    target: str
    threads: int
    host: dict
    fits: dict[str, Fit]

    def to_json(self) -> str:
        data = asdict(self)
        data["schema"] = SCHEMA
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path) -> "Calibration":
        try:
            data = json.loads(text)
            if data.pop("schema", None) != SCHEMA:
                raise ValueError(f"schema is not {SCHEMA}")
            data["fits"] = {key: Fit(**fit) for key, fit in data["fits"].items()}
            for key, fit in data["fits"].items():
                if set(fit.coefficients) != set(TERMS):
                    raise ValueError(f"fits.{key}.coefficients must have exactly {', '.join(TERMS)}")
            return cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise UserError(f"{path}: not a calibration file of this edgedistill ({exc}); run "
                            "`edgedistill calibrate` again") from None


def calibration_path(profile_path: Path) -> Path:
    return profile_path.with_name(profile_path.stem + SUFFIX)


def load_calibration(profile_path: Path) -> Calibration | None:
    """The calibration next to a device profile, or None when it was never calibrated."""
    path = calibration_path(profile_path)
    return Calibration.from_json(path.read_text(), path) if path.is_file() else None


def predictor_for(device, profile_path: Path) -> tuple[LatencyPredictor, Calibration | None]:
    """The device's predictor: its calibration where it has one, else the roofline scaled to the measurements
    its profile cites (latency/references.py), else the bare roofline."""
    from edgedistill.latency.references import reference_scales

    calibration = load_calibration(profile_path)
    return LatencyPredictor(device.hardware, calibration.fits if calibration else None,
                            reference_scales(device)), calibration


def measure_all(models: list[tuple[str, object, tuple[int, ...]]], *, formats: list[str], precisions: list[str],
                bench: Bench, rounds: int = ROUNDS, on_step: Callable[[str], None] = lambda label: None) -> list[dict]:
    """Every model in every format and precision on the target: one record each. Each artifact is timed in
    `rounds` interleaved rounds and keeps its quietest (see edgedistill.bench.rounds)."""
    from edgedistill.bench.rounds import interleaved, quietest, summary

    with tempfile.TemporaryDirectory(prefix="edgedistill-calibrate-") as tmp:
        artifacts = []
        for label, model, shape in models:
            for fmt in formats:
                for precision in precisions:
                    on_step(f"export {label} {fmt}/{precision}")
                    workdir = Path(tmp) / f"{label}-{fmt}-{precision}"
                    workdir.mkdir()
                    artifacts.append((label, fmt, precision, export_variant(model, shape, fmt, precision, workdir)))

        def step(index: int, round_index: int) -> None:
            label, fmt, precision, _ = artifacts[index]
            on_step(f"time {label} {fmt}/{precision} (round {round_index + 1} of {rounds})")

        timings = interleaved([lambda path=path: bench(path) for *_, path in artifacts], rounds, step)
    records = []
    for (label, fmt, precision, _), runs in zip(artifacts, timings):
        records.append({"model": label, "format": fmt, "precision": precision, **summary(runs),
                        "runtime": quietest(runs).get("runtime", {})})
    return records


def fit_all(records: list[dict], costs: dict[str, object], hardware) -> dict[str, Fit]:
    """One Fit per format/precision in `records`; `costs` maps each record's model to its ModelCost."""
    from edgedistill.latency.predictor import model_memory_mb

    fits = {}
    for key in dict.fromkeys(f"{r['format']}/{r['precision']}" for r in records):
        rows = [r for r in records if f"{r['format']}/{r['precision']}" == key]
        precision = key.split("/")[1]
        coefficients, fit_quality = fit([(terms(costs[r["model"]], hardware, precision), r["p50_ms"]) for r in rows])
        model_mb = {r["model"]: model_memory_mb(costs[r["model"]], precision) for r in rows}
        fits[key] = Fit(coefficients, p90_over_p50=statistics.median(r["p90_ms"] / r["p50_ms"] for r in rows),
                        ram_base_mb=statistics.median(r["peak_rss_mb"] - model_mb[r["model"]] for r in rows),
                        models=len(rows), quality=fit_quality)
    return fits


# Which calibration models `edgedistill calibrate --models` times. Calibrated on micro-models alone, the host's
# predictor put 0 of 20 real-size models within ±20 % (benchmarks/results/real_scale.json, 2026-11-30).
MODEL_SETS = {"all": ("micro", "real"), "micro": ("micro",), "real": ("real",)}
SPECS = {"micro": MICRO_MODELS, "real": REAL_SIZE_MODELS}


def model_count(which: str) -> int:
    return sum(len(SPECS[name]) for name in MODEL_SETS[which])


def calibration_models(which: str = "all") -> list[tuple[str, object, tuple[int, ...]]]:
    """(label, model, input shape) of the calibration models of MODEL_SETS[which]."""
    builders = {"micro": micro_models, "real": real_size_models}
    return [model for name in MODEL_SETS[which] for model in builders[name]()]


def calibrate(device, profile_path: Path, *, target: str, threads: int, bench: Bench, formats: list[str],
              precisions: list[str], rounds: int = ROUNDS, which: str = "all",
              on_step: Callable[[str], None] = lambda label: None) -> tuple[Calibration, list[dict]]:
    """Measure the calibration models of MODEL_SETS[which] in every format and precision; fit each
    format/precision. Returns the calibration and the raw measurements."""
    from edgedistill.cost import model_cost

    models = calibration_models(which)
    records = measure_all(models, formats=formats, precisions=precisions, bench=bench, rounds=rounds, on_step=on_step)
    fits = fit_all(records, {label: model_cost(model, shape) for label, model, shape in models}, device.hardware)
    runtimes = {k: v for r in records for k, v in r["runtime"].items()}
    calibration = Calibration(device.name, sha256_file(profile_path), time.strftime("%Y-%m-%dT%H:%M:%S%z"), target,
                              threads, {"machine": platform.machine(), "processor": str(device.hardware.processor),
                                        "runtimes": runtimes}, fits)
    return calibration, records


def refuse_overwrite(path: Path, replace: bool) -> None:
    if path.exists() and not replace:
        raise UserError(f"{path}: a calibration file is already there; pass --replace to overwrite it, or "
                        "--output for another path")


def write_calibration(calibration: Calibration, path: Path, *, replace: bool) -> Path:
    refuse_overwrite(path, replace)
    try:
        atomic_write_text(path, calibration.to_json())
    except PermissionError:
        raise UserError(f"{path}: cannot write next to the device profile (permission denied); pass --output "
                        "with a writable path") from None
    return path
