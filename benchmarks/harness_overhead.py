"""How much the benchmark runner's own loop adds: its p50 against a bare timing loop written here, apart from
the runner (plain onnxruntime / LiteRT calls on inputs converted beforehand, as an application feeds them), in
the same process, same thread count, same inputs. Also the runner's per-call input conversion (float to the
model's int8, for quantized TFLite), which the runner times apart from the latency.

For each exported model of a finished run: `repeats` rounds, alternating the two, each timing `runs`
single-sample inferences after warm-up. Reports the median ratio runner/bare and the run-to-run
coefficient of variation of each. Writes benchmarks/results/harness_overhead.json and a README table.
Usage: python benchmarks/harness_overhead.py RUN_DIR [--repeats 7] [--runs 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from _readme import update_section

from edgedistill.bench import runner

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "harness_overhead.json"


def bare_onnx(model: Path, x: np.ndarray):
    """An onnxruntime session on one thread, sequential (the runner's settings), and float32 inputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda sample: session.run(None, {name: sample})), [x[i:i + 1] for i in range(len(x))]


def bare_tflite(model: Path, x: np.ndarray):
    """A LiteRT interpreter, the inputs quantized beforehand when the model takes int8, and the scores read back
    as floats (an application reading an int8 model's output dequantizes it, as the runner does)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    samples = [x[i:i + 1] for i in range(len(x))]
    if inp["dtype"] in (np.int8, np.uint8):
        scale, zero = inp["quantization"]
        samples = [np.clip(np.round(s / scale + zero), -128, 127).astype(inp["dtype"]) for s in samples]

    def infer(sample):
        interpreter.set_tensor(inp["index"], sample)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    if out["dtype"] in (np.int8, np.uint8):
        scale, zero = out["quantization"]

        def infer_int8(sample):
            return (infer(sample).astype(np.float32) - zero) * scale

        return infer_int8, samples

    return infer, samples


def bare_p50(model: Path, x: np.ndarray, runs: int, warmup: int) -> float:
    """Nothing but perf_counter around each call."""
    infer, samples = (bare_onnx if model.suffix == ".onnx" else bare_tflite)(model, x)
    for i in range(warmup):
        infer(samples[i % len(samples)])
    times = []
    for i in range(runs):
        sample = samples[i % len(samples)]
        t0 = time.perf_counter()
        infer(sample)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def runner_p50(model: Path, data: Path, runs: int, warmup: int) -> tuple[float, float]:
    """The runner's p50 and its median per-sample input conversion."""
    args = argparse.Namespace(model=str(model), data=str(data), threads=1, cores="", warmup_runs=warmup, warmup_s=0,
                              runs=runs, min_time_s=0, save_outputs="", providers="CPUExecutionProvider", seq_len=32)
    result = runner.benchmark(args)
    return result["latency_ms"]["p50"], result["input_conversion_ms"]


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core for both loops
    data = args.run / "bench" / "test.npz"
    with np.load(data) as arrays:
        # The runner cycles through its first TIMING_SAMPLES samples: the bare loop takes the same ones.
        x = arrays["x"][:runner.TIMING_SAMPLES].astype(np.float32)
    rows = []
    for model in sorted((args.run / "export").glob("student-*.*")):
        ours, bare, conversion = [], [], []
        for _ in range(args.repeats):
            p50, converted = runner_p50(model, data, args.runs, 300)
            ours.append(p50)
            conversion.append(converted)
            bare.append(bare_p50(model, x, args.runs, 300))
        ratios = [o / b for o, b in zip(ours, bare)]
        rows.append({"model": model.name, "runner_p50_ms": statistics.median(ours),
                     "bare_p50_ms": statistics.median(bare), "ratio": statistics.median(ratios),
                     "runner_cv": cv(ours), "bare_cv": cv(bare),
                     "input_conversion_ms": statistics.median(conversion)})
        print(f"{model.name:24s} runner {rows[-1]['runner_p50_ms']:.4f} ms  bare {rows[-1]['bare_p50_ms']:.4f} ms  "
              f"ratio {rows[-1]['ratio']:.3f}  conversion {rows[-1]['input_conversion_ms']:.4f} ms")
    load = os.getloadavg()[0]
    summary = {"benchmark": "harness_overhead", "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
               "runs": args.runs, "threads": 1, "load_average_1min": load, "rows": rows}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"{args.repeats} alternating rounds of {args.runs} timed single-sample runs each, one thread, one core; "
             f"{summary['date']}, 1-minute load average {load:.2f} at the end.", "",
             "| model | runner p50 ms | bare loop p50 ms | runner / bare (median) | runner CV | bare CV | "
             "input conversion ms (not in p50) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['runner_p50_ms']:.4f} | {r['bare_p50_ms']:.4f} | {r['ratio']:.3f} | "
              f"{r['runner_cv']:.1%} | {r['bare_cv']:.1%} | {r['input_conversion_ms']:.4f} |" for r in rows]
    update_section("harness_overhead", "## Runner overhead\n\n`python benchmarks/harness_overhead.py RUN_DIR`: "
                   "the runner's p50 against a bare loop written apart from it.", lines)


if __name__ == "__main__":
    main()
