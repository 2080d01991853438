#!/usr/bin/env python3
"""edgedistill benchmark runner: times one model on this machine and prints JSON on stdout.

Self-contained on purpose: it needs only the standard library, numpy and the model's runtime, because it
is copied to the device and run there. Do not import edgedistill here.

Exit codes: 0 measured; 2 bad arguments or inputs; 3 runtime not installed; 4 model failed to load;
5 inference failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

SCHEMA_VERSION = 1

try:
    import numpy as np
except ImportError:  # answer in the runner's own format, so the host can say what the device lacks
    print(json.dumps({"schema_version": SCHEMA_VERSION, "status": "failed", "exit_code": 3,
                      "error": "numpy is not installed on this device"}))
    sys.exit(3)


class RunnerError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    VmHWM first: ru_maxrss can carry the parent's peak across fork+exec, which made a runner started
    from a process holding torch report ~480 MB.
    """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def token_feeds(inputs: list[tuple[str, list, str]], seq_len: int) -> dict[str, np.ndarray]:
    """Inputs of a token model (integer ids, attention mask...): ones of batch 1 and `seq_len` tokens on
    every named axis after the batch (id 1 is a real token of every vocabulary, a mask of 1 keeps it)."""
    feeds = {}
    for name, shape, dtype in inputs:
        dims = [1] + [d if isinstance(d, int) else seq_len for d in shape[1:]]
        feeds[name] = np.ones(dims, dtype=dtype)
    return feeds


# What the runner can feed: images as float (or quantized int8/uint8), and integer token ids.
ONNX_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
               "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64"}
FEEDABLE = tuple(ONNX_DTYPES.values())


def check_feedable(path: str, name: str, dtype: str) -> None:
    """Refuse an input the runner cannot fill with meaningful values (bool masks, strings, complex...)."""
    if dtype not in FEEDABLE:
        raise RunnerError(4, f"{path}: input '{name}' has dtype {dtype}, which the runner cannot feed "
                             f"(valid: float32/float16 images, int8/uint8 quantized images, int32/int64 tokens)")


def load_onnxruntime(path: str, threads: int, providers: list[str], seq_len: int = 32):
    """An onnxruntime session on the first requested providers this device has, CPU last.

    Returns (run(x) -> outputs, runtime info incl. the providers that actually ran, input shape).
    A model with integer inputs (a language model) runs on token feeds of `seq_len` tokens; x is unused.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise RunnerError(3, "onnxruntime is not installed on this device") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    available = ort.get_available_providers()
    chosen = [p for p in providers if p in available and p != "CPUExecutionProvider"] + ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(path, options, providers=chosen)
    except Exception as exc:  # noqa: BLE001
        raise RunnerError(4, f"onnxruntime could not load {path}: {exc}") from None
    inputs = session.get_inputs()
    for i in inputs:
        check_feedable(path, i.name, ONNX_DTYPES.get(i.type, i.type.removeprefix("tensor(").removesuffix(")")))
    info = {"onnxruntime": ort.__version__, "providers": session.get_providers(), "requested_providers": providers}
    if any(i.type in ("tensor(int32)", "tensor(int64)") for i in inputs):
        feeds = token_feeds([(i.name, i.shape, ONNX_DTYPES[i.type]) for i in inputs], seq_len)
        info.update(input_dtype=inputs[0].type[7:-1], seq_len=seq_len)
        return (lambda x: session.run(None, feeds)[0]), info, list(next(iter(feeds.values())).shape)
    inp = inputs[0]
    shape = [d if isinstance(d, int) else None for d in inp.shape]  # None: a named (dynamic) axis
    dtype = ONNX_DTYPES[inp.type]
    info["input_dtype"] = dtype
    return (lambda x: session.run(None, {inp.name: x.astype(dtype, copy=False)})[0]), info, shape


def _tflite_interpreter_class():
    """LiteRT's interpreter, else tflite_runtime's, else TensorFlow's: whichever the device has."""
    for module, attr in (("ai_edge_litert.interpreter", "Interpreter"), ("tflite_runtime.interpreter", "Interpreter"),
                         ("tensorflow.lite", "Interpreter")):
        try:
            return getattr(__import__(module, fromlist=[attr]), attr), module.split(".")[0]
        except ImportError:
            continue
    raise RunnerError(3, "no TFLite runtime on this device (ai_edge_litert, tflite_runtime or tensorflow)")


def to_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float samples to the input tensor's dtype; int8/uint8 inputs take its scale and zero point."""
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])
    return x.astype(detail["dtype"])


def from_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """An output tensor as float32, dequantized when it is int8/uint8."""
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero = detail["quantization"]
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


def load_tflite(path: str, threads: int, providers: list[str], seq_len: int = 32):
    """A TFLite interpreter for batch-1 inference; int8 inputs/outputs are converted both ways.
    A model with integer token inputs runs on ones of its own fixed length (`seq_len` does not apply)."""
    interpreter_class, runtime = _tflite_interpreter_class()
    try:
        interpreter = interpreter_class(model_path=path, num_threads=threads)
        interpreter.allocate_tensors()
    except Exception as exc:  # noqa: BLE001
        raise RunnerError(4, f"{runtime} could not load {path}: {exc}") from None
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    for detail in interpreter.get_input_details():
        check_feedable(path, detail["name"], np.dtype(detail["dtype"]).name)
    module = sys.modules[runtime]
    if np.issubdtype(inp["dtype"], np.integer) and inp["dtype"] not in (np.int8, np.uint8):
        details = interpreter.get_input_details()
        feeds = token_feeds([(d["index"], [int(v) for v in d["shape"]], d["dtype"]) for d in details], seq_len)

        def run_tokens(x):
            for index, value in feeds.items():
                interpreter.set_tensor(index, value)
            interpreter.invoke()
            return from_output(interpreter.get_tensor(out["index"]), out)

        info = {runtime: getattr(module, "__version__", "unknown"), "input_dtype": np.dtype(inp["dtype"]).name,
                "seq_len": int(inp["shape"][-1])}
        return run_tokens, info, [int(d) for d in inp["shape"]]

    def run(x):
        interpreter.set_tensor(inp["index"], to_input(x, inp))
        interpreter.invoke()
        return from_output(interpreter.get_tensor(out["index"]), out)

    info = {runtime: getattr(module, "__version__", "unknown"), "input_dtype": np.dtype(inp["dtype"]).name}
    return run, info, [int(d) for d in inp["shape"]]


RUNTIMES = {".onnx": load_onnxruntime, ".tflite": load_tflite}


def _read_sys(path: str) -> float | None:
    """A /sys value in thousandths (kHz, millidegrees) as units, or None where not readable."""
    try:
        return int(open(path).read().strip()) / 1000
    except (OSError, ValueError):
        return None


TEMPERATURE = "/sys/class/thermal/thermal_zone0/temp"


def device_info() -> dict:
    info = {"hostname": platform.node(), "machine": platform.machine(), "system": platform.system(),
            "python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count()}
    try:
        fields = dict(line.split(":", 1) for line in open("/proc/cpuinfo") if ":" in line)
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        # x86 names the CPU in 'model name'; a Raspberry Pi names the board in 'model' and the SoC in 'hardware'.
        for key in ("model name", "hardware"):
            if key in fields:
                info["cpu_model"] = fields[key]
                break
        if "model" in fields and not fields["model"].isdigit():
            info["board"] = fields["model"]
    except OSError:
        pass
    for key, path in (("cpu_mhz_now", "/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"),
                      ("cpu_mhz_max", "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"),
                      ("temperature_c", TEMPERATURE)):
        value = _read_sys(path)
        if value is not None:
            info[key] = value
    try:  # Raspberry Pi firmware: a non-zero value means under-voltage or thermal throttling happened
        import subprocess

        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2).stdout
        info["throttled"] = out.strip().split("=")[-1]
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def percentile_stats(samples_ms: list[float]) -> dict:
    arr = np.asarray(samples_ms, dtype=np.float64)
    return {"p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99)), "mean": float(arr.mean()), "std": float(arr.std()),
            "min": float(arr.min()), "max": float(arr.max()), "count": int(arr.size)}


def match_input(x: np.ndarray, input_shape: list, data: str) -> np.ndarray:
    """x as the model takes it: (N, H, W) gets its channel axis, as `edgedistill run` reads such arrays; any
    other mismatch is a one-line error instead of the runtime's."""
    if x.ndim == 3 and len(input_shape) == 4:
        x = x[:, None]
    if x.ndim != len(input_shape) or any(d is not None and d != n for d, n in zip(input_shape[1:], x.shape[1:])):
        want = ", ".join("any" if d is None else str(d) for d in input_shape[1:])
        raise RunnerError(2, f"--data {data!r}: x has shape {tuple(x.shape)}; the model takes (N, {want})")
    return x


def benchmark(args) -> dict:
    if args.cores:
        try:
            os.sched_setaffinity(0, {int(c) for c in args.cores.split(",")})
        except (AttributeError, OSError, ValueError) as exc:
            raise RunnerError(2, f"--cores {args.cores!r}: cannot pin ({exc})") from None
    suffix = os.path.splitext(args.model)[1]
    if suffix not in RUNTIMES:
        raise RunnerError(2, f"--model {args.model!r}: unknown suffix {suffix!r} (valid: {', '.join(RUNTIMES)})")
    x = y = None
    if args.data:
        try:
            with np.load(args.data, allow_pickle=False) as arrays:
                x, y = arrays["x"].astype(np.float32), arrays["y"]
        except (OSError, KeyError, ValueError) as exc:
            raise RunnerError(2, f"--data {args.data!r}: expected an .npz with arrays x and y ({exc})") from None
        if len(x) == 0 or len(x) != len(y):
            raise RunnerError(2, f"--data {args.data!r}: x has {len(x)} rows and y {len(y)}; need the same, > 0")
    rss_before = _peak_rss_mb()
    temperature_before = _read_sys(TEMPERATURE)
    t0 = time.perf_counter()
    providers = [p for p in args.providers.split(",") if p]
    infer, versions, input_shape = RUNTIMES[suffix](args.model, args.threads, providers, args.seq_len)
    if x is not None and "seq_len" in versions:
        raise RunnerError(2, f"--data {args.data!r}: {args.model} takes tokens; accuracy on --data is for image models")
    if x is not None:
        x = match_input(x, input_shape, args.data)
    init_ms = (time.perf_counter() - t0) * 1e3
    if x is None:  # timing only: zeros of the model's own input shape (token models: their own feeds)
        x = np.zeros([len(input_shape) and 1] + [d or 1 for d in input_shape[1:]], dtype=np.float32)  # dynamic: 1
    samples = [x[i:i + 1] for i in range(len(x))]
    try:
        t0 = time.perf_counter()
        infer(samples[0])
        first_ms = (time.perf_counter() - t0) * 1e3
        # Warm-up: at least warmup_runs and at least warmup_s seconds.
        i, start = 0, time.perf_counter()
        while i < args.warmup_runs or time.perf_counter() - start < args.warmup_s:
            infer(samples[i % len(samples)])
            i += 1
        # Timed runs: at least `runs` and at least `min_time_s` seconds (capped at 100x runs).
        times, start = [], time.perf_counter()
        while ((len(times) < args.runs or time.perf_counter() - start < args.min_time_s)
               and len(times) < 100 * args.runs):
            sample = samples[len(times) % len(samples)]
            t0 = time.perf_counter()
            infer(sample)
            times.append((time.perf_counter() - t0) * 1e3)
        outputs = np.concatenate([infer(s) for s in samples]) if y is not None else None
    except RunnerError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RunnerError(5, f"inference failed: {exc}") from None
    result = {
        "schema_version": SCHEMA_VERSION, "status": "ok", "model": os.path.basename(args.model),
        "model_bytes": os.path.getsize(args.model), "threads": args.threads, "cores": args.cores,
        "init_ms": init_ms, "first_inference_ms": first_ms, "warmup_runs": i,
        "latency_ms": percentile_stats(times), "throughput_per_s": 1e3 / float(np.mean(times)),
        # Up to 1,000 evenly spaced samples, in run order, so reports can draw the distribution.
        "samples_ms": [round(times[int(i)], 5) for i in np.linspace(0, len(times) - 1, min(1000, len(times)))],
        "peak_rss_mb": _peak_rss_mb(), "rss_before_load_mb": rss_before,
        "accuracy": None if y is None else float((outputs.argmax(1) == y).mean()),
        "samples": 0 if y is None else len(y), "runtime": versions, "device": device_info(),
        "temperature_before_c": temperature_before,
    }
    if args.save_outputs and outputs is not None:
        np.save(args.save_outputs, outputs)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default="",
                        help=".npz with x (inputs) and y (labels); without it, zeros, no accuracy")
    parser.add_argument("--providers", default="CPUExecutionProvider",
                        help="onnxruntime execution providers to try in order (CPU is always the fallback)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cores", default="", help="comma-separated CPU ids to pin to")
    parser.add_argument("--warmup-runs", type=int, default=10)
    parser.add_argument("--warmup-s", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--min-time-s", type=float, default=0.5)
    parser.add_argument("--seq-len", type=int, default=32, help="tokens per input for language models (ONNX)")
    parser.add_argument("--save-outputs", default="", help="write the model's outputs on x as .npy here")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(benchmark(args)))
        return 0
    except RunnerError as exc:
        print(json.dumps({"schema_version": SCHEMA_VERSION, "status": "failed", "error": str(exc),
                          "exit_code": exc.code}))
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
