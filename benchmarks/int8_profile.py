"""Where int8 time goes at 224x224, per runtime: per-op profiles of fp32 and static int8 artifacts, with each
runtime's own peak beside them.

For each model (the 224x224 students and the Lite0 teacher of real_scale.py, exported by the same FORMATS path
and calibrated by min-max on foolbox's 20 photos):
- ONNX Runtime (one thread): its profiler's kernel times, summed per op type and averaged per inference, in
  three groups for the int8 file — integer kernels (QLinear*, QGemm, *Integer), conversions (QuantizeLinear,
  DequantizeLinear: the float islands' edges and the I/O) and float ops left between them — beside the fp32 file's;
- LiteRT (one thread): the int8 file's operators by type and tensor type, how many pieces XNNPACK split it into and
  which operators ran outside XNNPACK (on TFLite's builtin kernels), and the latency with the default XNNPACK
  delegate and with the builtin kernels only (BUILTIN_WITHOUT_DEFAULT_DELEGATES);
- achieved multiply-adds per second (the model's MACs over its p50) against each runtime's peak on one large
  3x3 convolution and one large pointwise convolution (a GEMM) of the same precision, exported the same way.

Writes benchmarks/results/int8_profile.json (each finished model at once) and a table in benchmarks/README.md.
Usage: python benchmarks/int8_profile.py [--models mnv2,mnv3s,lite0] [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from _readme import update_section
from real_scale import MODELS, photos

from edgedistill.config.device import host_cpu, host_cpu_flags
from edgedistill.cost import model_cost
from edgedistill.export.formats import FORMATS, artifact_name

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "int8_profile.json"
INTEGER_OPS = ("QLinear", "QGemm", "ConvInteger", "MatMulInteger", "DynamicQuantize")
CONVERSIONS = ("QuantizeLinear", "DequantizeLinear")
# Each runtime's limit: one large layer of each kind, at batch 1 like the models.
PEAK_LAYERS = {
    "conv3x3 256→256 @56²": (lambda: torch.nn.Conv2d(256, 256, 3, padding=1), (1, 256, 56, 56)),
    "pointwise 256→256 @56² (GEMM)": (lambda: torch.nn.Conv2d(256, 256, 1), (1, 256, 56, 56)),
}


def op_group(op: str) -> str:
    if op.startswith(INTEGER_OPS):
        return "integer"
    return "conversion" if op in CONVERSIONS else "float"


def onnx_profile(path: Path, x: np.ndarray, runs: int, work: Path) -> dict:
    """p50 of ONNX Runtime's own run events and kernel time per op type (ms per inference), one thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(work / path.stem)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x[:1]}
    warmup = 5
    for _ in range(warmup + runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    executions = sorted((e for e in events if e.get("name") == "SequentialExecutor::Execute"), key=lambda e: e["ts"])
    timed = executions[warmup:]
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in timed]
    per_op: dict[str, float] = defaultdict(float)
    count: Counter = Counter()
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        if any(a <= e["ts"] <= b for a, b in windows):
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / len(timed)
            count[e["args"]["op_name"]] += 1
    groups: dict[str, float] = defaultdict(float)
    for op, ms in per_op.items():
        groups[op_group(op)] += ms
    return {"p50_ms": statistics.median(e["dur"] / 1000 for e in timed),
            "ops_ms": dict(sorted(per_op.items(), key=lambda kv: -kv[1])),
            "ops_per_run": {op: n // len(timed) for op, n in count.items()}, "groups_ms": dict(groups)}


def tflite_latency(path: Path, x: np.ndarray, runs: int, builtin_only: bool) -> dict:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgedistill.bench.runner import to_input

    kind = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin_only else OpResolverType.AUTO
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=kind)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], to_input(x[:1], detail))
        for _ in range(5):
            interpreter.invoke()
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            interpreter.invoke()
            times.append((time.perf_counter() - started) * 1000)
    except (RuntimeError, ValueError) as exc:
        return {"error": str(exc).splitlines()[0][:300]}
    return {"p50_ms": statistics.median(times)}


def tflite_partitions(path: Path) -> dict:
    """The file's operators by type and input tensor type, and what XNNPACK took: its pieces (DELEGATE nodes)
    and the operators left outside them. An operator ran outside XNNPACK when its output is materialized: an
    input of a piece, a graph output, or an input of another operator outside, without coming out of a piece."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    pieces = [o for o in ops if o["op_name"] == "DELEGATE"]
    plain = [o for o in ops if o["op_name"] != "DELEGATE"]
    made_by_pieces = {int(t) for o in pieces for t in o["outputs"]}
    visible = {int(t) for o in pieces for t in o["inputs"]} | {d["index"] for d in interpreter.get_output_details()}
    outside: dict[int, str] = {}  # operator index -> type
    changed = True
    while changed:
        changed = False
        for o in plain:
            outs = {int(t) for t in o["outputs"]}
            if o["index"] not in outside and outs & visible and not outs & made_by_pieces:
                outside[o["index"]] = o["op_name"]
                visible |= {int(t) for t in o["inputs"]}
                changed = True
    types = Counter(f"{o['op_name']} ({np.dtype(o['operand_types'][0]).name})" for o in plain if o["operand_types"])
    return {"operators": len(plain), "by_type": dict(types.most_common()), "xnnpack_pieces": len(pieces),
            "outside_xnnpack": dict(Counter(outside.values()).most_common())}


def artifacts(model, label: str, shape: tuple, folder: Path, stem: str, calibration: np.ndarray) -> dict:
    paths = {}
    for fmt in ("onnx", "tflite"):
        fp32 = folder / f"{stem}-{artifact_name(fmt, 'fp32')}"
        FORMATS[fmt].export(model, shape, fp32, opset=17, metadata={"model": label})
        for precision in ("fp32", "int8"):
            paths[fmt, precision] = FORMATS[fmt].variant(fp32, folder / f"{stem}-{artifact_name(fmt, precision)}",
                                                         precision, calibration, "minmax", [], {"model": label})
    return paths


def measure(paths: dict, x: np.ndarray, macs: int, runs: int, work: Path, details: bool) -> dict:
    out = {}
    for (fmt, precision), path in paths.items():
        if fmt == "onnx":
            cell = onnx_profile(path, x, runs, work)
        else:
            cell = {"xnnpack": tflite_latency(path, x, runs, builtin_only=False),
                    "builtin_kernels": tflite_latency(path, x, runs, builtin_only=True)}
            cell["p50_ms"] = cell["xnnpack"].get("p50_ms")
            if details:
                cell["partitions"] = tflite_partitions(path)
        if cell.get("p50_ms"):
            cell["gmacs_per_s"] = macs / cell["p50_ms"] / 1e6
        out[f"{fmt} {precision}"] = cell
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnv2,mnv3s,lite0")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    record = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    record.update({"benchmark": "int8_profile", "date": time.strftime("%Y-%m-%d"), "cpu": host_cpu(),
                   "vnni": any("vnni" in f for f in host_cpu_flags()),
                   "avx512": any(f.startswith("avx512") for f in host_cpu_flags()), "threads": 1,
                   "runs": args.runs, "load_before": os.getloadavg(), "calibration": "min-max on 20 photos"})
    record.setdefault("peaks", {})
    record.setdefault("models", {})
    x, _ = photos()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, (make, shape) in PEAK_LAYERS.items():
            layer = make().eval()
            sample = np.random.default_rng(0).standard_normal((8, *shape[1:])).astype(np.float32)
            macs = model_cost(layer, shape[1:]).macs
            paths = artifacts(layer, name, shape, work, f"peak-{name.split()[0]}", sample)
            record["peaks"][name] = {"macs": macs, **measure(paths, sample, macs, args.runs, work, details=False)}
            RESULTS.write_text(json.dumps(record, indent=2) + "\n")
        for key in args.models.split(","):
            label, make = MODELS[key]
            model = make().eval()
            macs = model_cost(model, (3, 224, 224)).macs
            paths = artifacts(model, label, (1, 3, 224, 224), work, key, x)
            record["models"][key] = {"label": label, "macs": macs,
                                     **measure(paths, x, macs, args.runs, work, details=True),
                                     "load_after": os.getloadavg()}
            RESULTS.write_text(json.dumps(record, indent=2) + "\n")
            print(f"{label}: done", flush=True)
    _update_readme(record)


def _update_readme(r: dict) -> None:
    peak = {f"{fmt} {p}": max(c[f"{fmt} {p}"].get("gmacs_per_s") or 0 for c in r["peaks"].values())
            for fmt in ("onnx", "tflite") for p in ("fp32", "int8")}
    rows = [f"One thread on this host ({r['cpu']}; AVX-512 {'yes' if r['avx512'] else 'no'}, VNNI "
            f"{'yes' if r['vnni'] else 'no'}), {r['runs']} timed runs after 5, batch 1, {r['date']}; int8 is static "
            f"({r['calibration']}). Peak: the best of one large 3×3 and one large pointwise convolution in that "
            "runtime and precision. ONNX int8 time split by the profiler into integer kernels / Q-DQ conversions / "
            "float ops; LiteRT: the XNNPACK delegate's pieces and the operators left outside it.", "",
            "| model | runtime | fp32 ms | int8 ms | int8 speed-up | GMAC/s fp32 (peak) | GMAC/s int8 (peak) | "
            "where int8 time goes |", "|---|---|---|---|---|---|---|---|"]
    for m in r["models"].values():
        for fmt in ("onnx", "tflite"):
            f32, i8 = m[f"{fmt} fp32"], m[f"{fmt} int8"]
            if fmt == "onnx":
                g = i8["groups_ms"]
                floats = [op for op in i8["ops_ms"] if op_group(op) == "float"][:3]
                where = (f"integer {g.get('integer', 0):.2f} ms, Q/DQ {g.get('conversion', 0):.2f} ms, float "
                         f"{g.get('float', 0):.2f} ms ({', '.join(floats) or 'none'})")
            else:
                part = i8["partitions"]
                outside = ", ".join(f"{k} ×{v}" for k, v in part["outside_xnnpack"].items()) or "none"
                builtin = i8["builtin_kernels"]
                where = (f"{part['xnnpack_pieces']} XNNPACK pieces; outside: {outside}; builtin kernels only: "
                         + (f"{builtin['p50_ms']:.2f} ms" if "p50_ms" in builtin else "does not prepare"))
            rows.append(f"| {m['label']} | {fmt} | {f32['p50_ms']:.2f} | {i8['p50_ms']:.2f} | "
                        f"{f32['p50_ms'] / i8['p50_ms']:.2f}× | {f32['gmacs_per_s']:.1f} ({peak[f'{fmt} fp32']:.0f}) | "
                        f"{i8['gmacs_per_s']:.1f} ({peak[f'{fmt} int8']:.0f}) | {where} |")
    update_section("int8_profile", "## Where int8 time goes at 224×224\n\n`python benchmarks/int8_profile.py`; "
                   "results/int8_profile.json", rows)


if __name__ == "__main__":
    main()
