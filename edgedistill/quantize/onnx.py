"""fp16, dynamic int8 and static QDQ int8 variants of an fp32 ONNX model, with onnxruntime.quantization.

Static int8 uses QDQ with per-channel weights, calibrated on samples of the training split by MinMax,
Entropy or Percentile. Dynamic int8 quantizes weights only ahead of time: on convolutions it is often
slower than fp32 (benchmarks/README.md, Quantization: the teacher CNN's ONNX dynamic int8 p50 was 3.8x its fp32),
so static is the CNN default. Weight-only int8 (`int8-weights`) stores MatMul weights as 8-bit blocks of 32
(the MatMulNBits contrib operator) and quantizes activations per block of 32 at run time, not per tensor:
the per-tensor dynamic int8 of a whole activation row broke SmolLM2's students (logits off by 40, no greedy
token right), which block-wise scales absorb (max |Δ| 1.3, the same next token) — the causal-LM default.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgedistill.fileio import atomic_output

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Layers a fallback may keep in float: the compute-heavy ops that carry weights.
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


def first_and_last_layers(path: Path) -> list[str]:
    """Names of the first and last weighted nodes, the usual suspects for quantization error."""
    import onnx

    nodes = [n.name for n in onnx.load(str(path)).graph.node if n.op_type in WEIGHTED_OPS]
    return sorted({nodes[0], nodes[-1]}) if nodes else []


def quantize_onnx(fp32_path: Path, out_path: Path, precision: str, *, calibration_x: np.ndarray | None = None,
                  method: str = "minmax", keep_float: list[str] = (), reduce_range: bool = False) -> Path:
    """Write the `precision` variant of `fp32_path` to `out_path` ('fp16', 'int8-weights', 'int8-dynamic' or
    'int8'). `reduce_range`: static int8 weights in 7 bits (onnxruntime's option for x86 CPUs without VNNI, whose
    u8 x s8 kernels add products in pairs into 16 bits and saturate with 8-bit weights)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # keep_io_types: the model still takes and returns float32, so callers need not change.
        with atomic_output(out_path) as tmp:
            onnx.save(convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True), str(tmp))
        return out_path
    if precision == "int8-weights":
        return _int8_weights(fp32_path, out_path, keep_float)
    with tempfile.TemporaryDirectory() as work, atomic_output(out_path) as tmp:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(self_contained(fp32_path, Path(work))), str(prepared), skip_symbolic_shape=True)
        if precision == "int8-dynamic":
            quantize_dynamic(str(prepared), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_exclude=list(keep_float))
        elif precision == "int8":
            if calibration_x is None or len(calibration_x) == 0:
                raise ValueError("static int8 needs calibration samples")
            calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                         "percentile": CalibrationMethod.Percentile}[method]
            quantize_static(str(prepared), str(tmp), calibration_reader(str(prepared), calibration_x),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=calibrate,
                            nodes_to_exclude=list(keep_float), reduce_range=reduce_range)
        else:
            raise ValueError(f"unknown precision {precision!r} for ONNX quantization")
    return out_path


def _int8_weights(fp32_path: Path, out_path: Path, keep_float: list[str]) -> Path:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from edgedistill.quiet import quiet

    # accuracy_level 4: activations quantized to int8 per block inside MatMulNBits (its fastest CPU path).
    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, bits=8, accuracy_level=4)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32_path)), nodes_to_exclude=list(keep_float),
                                     algo_config=config)
    with quiet():  # it logs every MatMul at INFO
        quantizer.process()
    with atomic_output(out_path) as tmp:
        quantizer.model.save_model_to_file(str(tmp), use_external_data_format=False)
    return out_path


def self_contained(path: Path, work: Path) -> Path:
    """`path`, or a copy in `work` with its external-data weights inlined: the quantizers copy the model to
    folders of their own, where the weights file beside it would not follow."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    if not any(uses_external_data(t) for t in model.graph.initializer):
        return path
    inlined = work / "inlined.onnx"
    onnx.save(onnx.load(str(path)), str(inlined))  # loads the data from beside `path`, saves it inside
    return inlined


def calibration_reader(model_path: str, x: np.ndarray):
    """A CalibrationDataReader feeding one sample at a time (the exported batch axis is dynamic)."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader

    name = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._samples = iter(x[i:i + 1] for i in range(len(x)))

        def get_next(self):
            sample = next(self._samples, None)
            return None if sample is None else {name: sample}

    return Reader()
