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


class Loaded:
    """A model loaded on its runtime. `prepare` turns float samples into what the model takes (a cast, or int8
    quantization with the input's scale and zero point), as an application would before calling it; `infer`
    runs prepared inputs and returns float32 outputs. Only `infer` is timed; `prepare`'s cost is its own figure."""

    def __init__(self, infer, prepare, info: dict, input_shape: list):
        self.infer, self.prepare, self.info, self.input_shape = infer, prepare, info, input_shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.infer(self.prepare(x))


def check_feedable(path: str, name: str, dtype: str) -> None:
    """Refuse an input the runner cannot fill with meaningful values (bool masks, strings, complex...)."""
    if dtype not in FEEDABLE:
        raise RunnerError(4, f"{path}: input '{name}' has dtype {dtype}, which the runner cannot feed "
                             f"(valid: float32/float16 images, int8/uint8 quantized images, int32/int64 tokens)")


def onnx_session(path: str, threads: int, providers: list[str]):
    """(session, info): onnxruntime on the first requested providers this device has, CPU last; the info names
    the providers that actually ran."""
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
    for i in session.get_inputs():
        check_feedable(path, i.name, ONNX_DTYPES.get(i.type, i.type.removeprefix("tensor(").removesuffix(")")))
    return session, {"onnxruntime": ort.__version__, "providers": session.get_providers(),
                     "requested_providers": providers}


def load_onnxruntime(path: str, threads: int, providers: list[str], seq_len: int = 32):
    """An onnxruntime session (see `onnx_session`). A model with integer inputs (a language model) runs on
    token feeds of `seq_len` tokens; x is unused."""
    session, info = onnx_session(path, threads, providers)
    if OnnxDecoder.is_decoder(session):
        return OnnxDecoder(session, info)
    inputs = session.get_inputs()
    if any(i.type in ("tensor(int32)", "tensor(int64)") for i in inputs):
        feeds = token_feeds([(i.name, i.shape, ONNX_DTYPES[i.type]) for i in inputs], seq_len)
        info.update(input_dtype=inputs[0].type[7:-1], seq_len=seq_len)
        return Loaded(lambda _: session.run(None, feeds)[0], lambda x: x, info,
                      list(next(iter(feeds.values())).shape))
    inp = inputs[0]
    shape = [d if isinstance(d, int) else None for d in inp.shape]  # None: a named (dynamic) axis
    dtype = ONNX_DTYPES[inp.type]
    info["input_dtype"] = dtype
    return Loaded(lambda prepared: session.run(None, {inp.name: prepared})[0],
                  lambda x: x.astype(dtype, copy=False), info, shape)


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
    return y.astype(np.float32, copy=False)


def load_tflite(path: str, threads: int, providers: list[str], seq_len: int = 32):
    """A TFLite interpreter for batch-1 inference; int8 inputs are quantized by `prepare`, outputs dequantized.
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
    if TfliteDecoder.is_decoder(interpreter):
        return TfliteDecoder(interpreter, {runtime: getattr(module, "__version__", "unknown"), "input_dtype": "int32"})
    if np.issubdtype(inp["dtype"], np.integer) and inp["dtype"] not in (np.int8, np.uint8):
        details = interpreter.get_input_details()
        feeds = token_feeds([(d["index"], [int(v) for v in d["shape"]], d["dtype"]) for d in details], seq_len)

        def run_tokens(_):
            for index, value in feeds.items():
                interpreter.set_tensor(index, value)
            interpreter.invoke()
            return from_output(interpreter.get_tensor(out["index"]), out)

        info = {runtime: getattr(module, "__version__", "unknown"), "input_dtype": np.dtype(inp["dtype"]).name,
                "seq_len": int(inp["shape"][-1])}
        return Loaded(run_tokens, lambda x: x, info, [int(d) for d in inp["shape"]])

    # Looked up once: at a few microseconds a call, dictionary and dtype checks would show in the latency.
    set_input, get_output, invoke = interpreter.set_tensor, interpreter.get_tensor, interpreter.invoke
    in_index, out_index = inp["index"], out["index"]
    if out["dtype"] == np.float32:
        def run(prepared):
            set_input(in_index, prepared)
            invoke()
            return get_output(out_index)
    else:  # int8 / uint8 to dequantize, or another float to widen
        def run(prepared):
            set_input(in_index, prepared)
            invoke()
            return from_output(get_output(out_index), out)

    info = {runtime: getattr(module, "__version__", "unknown"), "input_dtype": np.dtype(inp["dtype"]).name}
    return Loaded(run, lambda x: to_input(x, inp), info, [int(d) for d in inp["shape"]])


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


class NpzRows:
    """The rows of array `name` in an .npz, read a chunk at a time from the zip member (stored or deflated), so
    that a large test split costs one chunk of memory, not the whole array (and never a pickle)."""

    def __init__(self, path: str, name: str):
        import zipfile

        self.path, self.member = path, f"{name}.npy"
        with zipfile.ZipFile(path) as archive, archive.open(self.member) as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            self.shape, fortran, self.dtype = read_header(f)
        if fortran or self.dtype.hasobject or not self.shape:
            raise ValueError(f"{name} must be a C-ordered numeric array with a first axis")

    def __len__(self) -> int:
        return self.shape[0]

    def chunks(self, rows: int):
        """Float32 arrays of up to `rows` rows, in order."""
        import zipfile

        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as f:
            version = np.lib.format.read_magic(f)
            (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
            for start in range(0, len(self), rows):
                n = min(rows, len(self) - start)
                raw = f.read(n * row_bytes)
                if len(raw) != n * row_bytes:
                    raise ValueError(f"{self.member} ends after {start} rows; its header says {len(self)}")
                yield np.frombuffer(raw, dtype=self.dtype).reshape(n, *self.shape[1:]).astype(np.float32)


CHUNK_ROWS = 256  # test rows read at a time
TIMING_SAMPLES = 64  # distinct samples the timed loop cycles through


def read_data(path: str) -> tuple[NpzRows, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            y = arrays["y"]
        x = NpzRows(path, "x")
    except (OSError, KeyError, ValueError) as exc:
        raise RunnerError(2, f"--data {path!r}: expected an .npz with arrays x and y ({exc})") from None
    if len(x) == 0 or len(x) != len(y):
        raise RunnerError(2, f"--data {path!r}: x has {len(x)} rows and y {len(y)}; need the same, > 0")
    return x, y


class Decoder:
    """A causal LM with its KV cache as model inputs and outputs: greedy generation, one prompt at a time.
    A runtime's decoder says how to start (`start(prompt, new_tokens)`: the logits of the first new token)
    and how to take one more token (`step(token)`: the logits of the next)."""

    info: dict

    def start(self, prompt: list, new_tokens: int) -> np.ndarray:
        raise NotImplementedError

    def step(self, token: int) -> np.ndarray:
        raise NotImplementedError

    def generate(self, prompt: list, new_tokens: int, stops=()) -> tuple[list, float, list]:
        """(tokens, time to first token in ms, ms of each later token), stopping after a stop token or
        `new_tokens` tokens."""
        tokens, steps = [], []
        t0 = time.perf_counter()
        logits = self.start(prompt, new_tokens)
        while True:
            token = int(np.argmax(logits))
            now = time.perf_counter()
            if tokens:
                steps.append((now - t0) * 1e3)
            else:
                ttft = (now - t0) * 1e3
            tokens.append(token)
            if token in stops or len(tokens) >= new_tokens:
                return tokens, ttft, steps
            t0 = time.perf_counter()
            logits = self.step(token)


class OnnxDecoder(Decoder):
    """edgedistill's `lm.kv_export` layout: input_ids and past_key_<i> / past_value_<i> in, the last position's
    logits and present_* out; the prompt goes in once with empty pasts, then one token per call."""

    def __init__(self, session, info: dict):
        self.session, self.info = session, info
        inputs = session.get_inputs()
        self.pasts = [(i.name, i.shape) for i in inputs if i.name.startswith("past_")]
        for name, shape in self.pasts:
            if len(shape) != 4 or not all(isinstance(d, int) for d in (shape[1], shape[3])):
                raise RunnerError(4, f"decoder input {name} has shape {shape}; expected (1, kv_heads, past, head_dim)")
        self.dtype = ONNX_DTYPES.get(inputs[1].type, "float32") if len(inputs) > 1 else "float32"
        self.presents = []

    @staticmethod
    def is_decoder(session) -> bool:
        names = [i.name for i in session.get_inputs()]
        return "input_ids" in names and any(n.startswith("past_key_") for n in names)

    def _run(self, ids: list, pasts: list) -> np.ndarray:
        feeds = {name: past for (name, _), past in zip(self.pasts, pasts)}
        feeds["input_ids"] = np.asarray([ids], dtype=np.int64)
        logits, *self.presents = self.session.run(None, feeds)
        return logits[0]

    def start(self, prompt: list, new_tokens: int) -> np.ndarray:
        return self._run(prompt, [np.zeros((1, shape[1], 0, shape[3]), dtype=self.dtype) for _, shape in self.pasts])

    def step(self, token: int) -> np.ndarray:
        return self._run([token], self.presents)


class TfliteDecoder(Decoder):
    """litert-torch's generative layout (`lm.litert_decoder`): prefill_<n> signatures fill the fixed-size cache
    kv_cache_k_<i> / kv_cache_v_<i> from tokens (1, n) at input_pos (n,), padded at the end; decode takes one
    token at its position and returns logits. As LiteRT-LM does, the prompt but its last token is prefilled
    (in chunks of the longest prefill) and the last token is the first decode."""

    def __init__(self, interpreter, info: dict):
        self.info = info
        signatures = interpreter.get_signature_list()
        self.prefills = {int(n.split("_")[1]): interpreter.get_signature_runner(n) for n in signatures
                         if n.startswith("prefill_") and n.split("_")[1].isdigit()}
        self.decode = interpreter.get_signature_runner("decode")
        details = self.decode.get_input_details()
        self.cache = {n: (tuple(int(v) for v in d["shape"]), d["dtype"]) for n, d in details.items()
                      if n.startswith("kv_cache_")}
        shapes = {shape for shape, _ in self.cache.values()}
        if not self.prefills or not self.cache or len(shapes) != 1 or len(next(iter(shapes))) != 4:
            raise RunnerError(4, f"decoder signatures {sorted(signatures)}: expected prefill_<n>, decode and "
                                 "kv_cache_k_<i> / kv_cache_v_<i> of one shape (1, cache, kv_heads, head_dim)")
        self.capacity = next(iter(shapes))[1]
        self.kv, self.position = {}, 0

    @staticmethod
    def is_decoder(interpreter) -> bool:
        names = interpreter.get_signature_list()
        return "decode" in names and any(n.startswith("prefill_") for n in names)

    def _decode(self, token: int) -> np.ndarray:
        if self.position >= self.capacity:
            raise RunnerError(5, f"the model's KV cache holds {self.capacity} positions; the prompt and answer "
                                 "need more")
        out = self.decode(tokens=np.asarray([[token]], dtype=np.int32),
                          input_pos=np.asarray([self.position], dtype=np.int32), **self.kv)
        self.kv = {name: out[name] for name in self.cache}
        self.position += 1
        return out["logits"][0, -1]

    def start(self, prompt: list, new_tokens: int) -> np.ndarray:
        if len(prompt) + new_tokens > self.capacity:
            raise RunnerError(2, f"a prompt of {len(prompt)} tokens and {new_tokens} new ones exceed the model's KV "
                                 f"cache of {self.capacity} positions")
        self.kv = {name: np.zeros(shape, dtype) for name, (shape, dtype) in self.cache.items()}
        self.position, longest, body = 0, max(self.prefills), prompt[:-1]
        while self.position < len(body):
            chunk = body[self.position:self.position + longest]
            # The shortest prefill that takes the chunk; its padding must still land inside the cache.
            n = min((n for n in self.prefills if n >= len(chunk) and self.position + n <= self.capacity),
                    default=len(chunk))
            if n not in self.prefills:
                raise RunnerError(2, f"no prefill signature fits {len(chunk)} tokens at position {self.position} "
                                     f"of a {self.capacity}-position cache (prefills: {sorted(self.prefills)})")
            tokens = np.zeros((1, n), dtype=np.int32)
            tokens[0, :len(chunk)] = chunk
            out = self.prefills[n](tokens=tokens, input_pos=np.arange(self.position, self.position + n,
                                                                      dtype=np.int32), **self.kv)
            self.kv = {name: out[name] for name in self.cache}
            self.position += len(chunk)
        return self._decode(prompt[-1])

    def step(self, token: int) -> np.ndarray:
        return self._decode(token)


MAX_PROMPTS, MAX_NEW_TOKENS = 1000, 4096


def _holds_prompts(path: str) -> bool:
    """Whether an .npz is prompts for a decoder (it has offsets) rather than test data; unreadable: False, so
    that reading it as test data says what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return "offsets" in arrays.files
    except Exception:  # noqa: BLE001 - any unreadable file is reported by read_data
        return False


def read_prompts(path: str) -> tuple[list, int, set]:
    """(prompts as token-id lists, new tokens per answer, stop ids) from an .npz with ids (all prompts' tokens,
    concatenated), offsets (where each starts, and the end), new_tokens and stop_ids."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            ids, offsets = arrays["ids"].astype(np.int64), arrays["offsets"].astype(np.int64)
            new_tokens, stops = int(arrays["new_tokens"]), {int(t) for t in arrays["stop_ids"].ravel()}
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise RunnerError(2, f"--data {path!r}: expected prompts as an .npz with ids, offsets, new_tokens, "
                             f"stop_ids ({exc})") from None
    if not (1 <= len(offsets) - 1 <= MAX_PROMPTS and 1 <= new_tokens <= MAX_NEW_TOKENS and offsets[0] == 0
            and offsets[-1] == len(ids) and np.all(np.diff(offsets) > 0)):
        raise RunnerError(2, f"--data {path!r}: need 1..{MAX_PROMPTS} non-empty prompts, increasing offsets from 0 "
                             f"to len(ids), and 1..{MAX_NEW_TOKENS} new tokens")
    return [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])], new_tokens, stops


def benchmark_generation(args, decoder: Decoder, init_ms: float, rss_before: float, temperature_before) -> dict:
    """A KV-cache decoder: time to first token on a prompt of --seq-len tokens and decode speed over the
    answer's new tokens (--runs times, after one warm-up), then greedy answers to --data's prompts, if given."""
    prompts, new_tokens, stops = read_prompts(args.data) if args.data else ([], 32, set())
    source = [t for p in prompts for t in p] or [1]
    timing_prompt = (source * (args.seq_len // len(source) + 1))[:args.seq_len]
    ttfts, steps = [], []
    try:
        decoder.generate(timing_prompt, new_tokens)  # warm-up
        for _ in range(max(1, args.runs)):
            _, ttft, step_ms = decoder.generate(timing_prompt, new_tokens)  # no stop: every run decodes as long
            ttfts.append(ttft)
            steps += step_ms
        peak_timing_mb = _peak_rss_mb()
        answers = [decoder.generate(p, new_tokens, stops)[0] for p in prompts]
    except RunnerError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RunnerError(5, f"generation failed: {exc}") from None
    steps = steps or ttfts  # one new token: nothing decoded after the first
    return {
        "schema_version": SCHEMA_VERSION, "status": "ok", "model": os.path.basename(args.model),
        "model_bytes": os.path.getsize(args.model), "threads": args.threads, "cores": args.cores,
        "init_ms": init_ms, "first_inference_ms": ttfts[0], "warmup_runs": 1,
        "latency_ms": percentile_stats(steps), "throughput_per_s": 1e3 / float(np.mean(steps)),
        "samples_ms": [round(steps[int(i)], 5) for i in np.linspace(0, len(steps) - 1, min(1000, len(steps)))],
        "input_conversion_ms": 0.0, "peak_rss_mb": peak_timing_mb, "peak_rss_with_data_mb": _peak_rss_mb(),
        "data_mb": 0.0, "rss_before_load_mb": rss_before, "accuracy": None, "samples": len(prompts),
        "generation": {"prompt_tokens": len(timing_prompt), "new_tokens": new_tokens, "runs": len(ttfts),
                       "ttft_ms": percentile_stats(ttfts), "decode_tokens_per_s": 1e3 / float(np.mean(steps))},
        "answers": answers, "runtime": {"input_dtype": "int64", **decoder.info, "seq_len": len(timing_prompt)},
        "device": device_info(), "temperature_before_c": temperature_before,
    }


def benchmark(args) -> dict:
    if args.cores:
        try:
            os.sched_setaffinity(0, {int(c) for c in args.cores.split(",")})
        except (AttributeError, OSError, ValueError) as exc:
            raise RunnerError(2, f"--cores {args.cores!r}: cannot pin ({exc})") from None
    suffix = os.path.splitext(args.model)[1]
    if suffix not in RUNTIMES:
        raise RunnerError(2, f"--model {args.model!r}: unknown suffix {suffix!r} (valid: {', '.join(RUNTIMES)})")
    # Test data is checked before the model loads (a bad file is named first); prompts are read by the decoder.
    prompts = bool(args.data) and _holds_prompts(args.data)
    x_rows, y = read_data(args.data) if args.data and not prompts else (None, None)
    rss_before = _peak_rss_mb()
    temperature_before = _read_sys(TEMPERATURE)
    t0 = time.perf_counter()
    providers = [p for p in args.providers.split(",") if p]
    model = RUNTIMES[suffix](args.model, args.threads, providers, args.seq_len)
    init_ms = (time.perf_counter() - t0) * 1e3
    if isinstance(model, Decoder):
        return benchmark_generation(args, model, init_ms, rss_before, temperature_before)
    if prompts:
        raise RunnerError(2, f"--data {args.data!r} holds prompts for a KV-cache decoder; {args.model} is not one")
    if x_rows is not None and "seq_len" in model.info:
        raise RunnerError(2, f"--data {args.data!r}: {args.model} takes tokens; accuracy on --data is for image models")
    if x_rows is None:  # timing only: zeros of the model's own input shape (token models: their own feeds)
        first = np.zeros([len(model.input_shape) and 1] + [d or 1 for d in model.input_shape[1:]], dtype=np.float32)
    else:
        first = match_input(next(x_rows.chunks(TIMING_SAMPLES)), model.input_shape, args.data)
    try:
        # What an application feeds: inputs already converted to the model's dtype. The conversion's own cost
        # (int8 quantization of a float sample) is timed apart.
        conversion = []
        samples = []
        for i in range(len(first)):
            t0 = time.perf_counter()
            samples.append(model.prepare(first[i:i + 1]))
            conversion.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        model.infer(samples[0])
        first_ms = (time.perf_counter() - t0) * 1e3
        # Warm-up: at least warmup_runs and at least warmup_s seconds.
        i, start = 0, time.perf_counter()
        while i < args.warmup_runs or time.perf_counter() - start < args.warmup_s:
            model.infer(samples[i % len(samples)])
            i += 1
        # Timed runs: at least `runs` and at least `min_time_s` seconds (capped at 100x runs).
        times, start = [], time.perf_counter()
        while ((len(times) < args.runs or time.perf_counter() - start < args.min_time_s)
               and len(times) < 100 * args.runs):
            sample = samples[len(times) % len(samples)]
            t0 = time.perf_counter()
            model.infer(sample)
            times.append((time.perf_counter() - t0) * 1e3)
        peak_timing_mb = _peak_rss_mb()
        # Accuracy: the whole test split, one sample at a time, read a chunk at a time; the outputs are kept
        # only when asked for (--save-outputs), in one preallocated array.
        correct, outputs, seen = 0, None, 0
        if x_rows is not None:
            for chunk in x_rows.chunks(CHUNK_ROWS):
                chunk = match_input(chunk, model.input_shape, args.data)
                for j in range(len(chunk)):
                    out = model(chunk[j:j + 1])
                    correct += int(out.argmax(1)[0] == y[seen])
                    if args.save_outputs:
                        if outputs is None:
                            outputs = np.empty((len(x_rows), *out.shape[1:]), dtype=np.float32)
                        outputs[seen] = out[0]
                    seen += 1
    except RunnerError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RunnerError(5, f"inference failed: {exc}") from None
    data_mb = 0.0 if x_rows is None else (TIMING_SAMPLES + CHUNK_ROWS) * float(np.prod(first.shape[1:])) * 4 / 2**20
    result = {
        "schema_version": SCHEMA_VERSION, "status": "ok", "model": os.path.basename(args.model),
        "model_bytes": os.path.getsize(args.model), "threads": args.threads, "cores": args.cores,
        "init_ms": init_ms, "first_inference_ms": first_ms, "warmup_runs": i,
        "latency_ms": percentile_stats(times), "throughput_per_s": 1e3 / float(np.mean(times)),
        # Up to 1,000 evenly spaced samples, in run order, so reports can draw the distribution.
        "samples_ms": [round(times[int(i)], 5) for i in np.linspace(0, len(times) - 1, min(1000, len(times)))],
        "input_conversion_ms": float(np.median(conversion)),
        # Peak RSS while timing: the runtime, the model and TIMING_SAMPLES inputs; the accuracy pass after it
        # adds one chunk of the test split at most (data_mb bounds what the data ever held).
        "peak_rss_mb": peak_timing_mb, "peak_rss_with_data_mb": _peak_rss_mb(), "data_mb": data_mb,
        "rss_before_load_mb": rss_before,
        "accuracy": None if y is None else correct / len(y),
        "samples": 0 if y is None else len(y), "runtime": model.info, "device": device_info(),
        "temperature_before_c": temperature_before,
    }
    if args.save_outputs and outputs is not None:
        np.save(args.save_outputs, outputs)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default="",
                        help=".npz with x (inputs) and y (labels); without it, zeros, no accuracy. For a KV-cache "
                             "decoder: prompts to answer (ids, offsets, new_tokens, stop_ids)")
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
