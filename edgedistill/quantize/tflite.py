"""fp16, weight-only int8, dynamic-range int8 and full int8 variants of an fp32 .tflite, with ai-edge-quantizer.

Full int8 (`static_wi8_ai8`) is calibrated on training samples and makes the model's inputs and
outputs int8. Activation ranges are the smallest minimum and the largest maximum over all calibration samples,
as ONNX Runtime's MinMax calibrator takes them. ai-edge-quantizer's own default keeps a moving average (0.95) of
each sample's range instead; calibrated one sample at a time (the models take batch 1), that follows the typical
sample and clips the widest ones: on the ELPV student it cost 5 points that global ranges do not
(benchmarks/README.md, "LiteRT int8 calibration").
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgedistill.export.tflite import read_metadata, write_with_metadata

CALIBRATION_METHODS = ("minmax",)
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _recipe(precision: str):
    from ai_edge_quantizer import algorithm_manager, qtyping, recipe, recipe_manager

    if precision == "int8":
        return recipe.static_wi8_ai8()
    if precision == "int8-dynamic":
        return recipe.dynamic_wi8_afp32()
    if precision == "int8-weights":
        return recipe.weight_only_wi8_afp32()
    if precision == "fp16":
        manager = recipe_manager.RecipeManager()
        manager.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                       num_bits=16, algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
        return manager.get_quantization_recipe()
    raise ValueError(f"unknown precision {precision!r} for TFLite quantization")


def first_and_last_layers(path: Path) -> list[str]:
    """Scope names of the first and last weighted ops (litert-torch names scopes by module path)."""
    from ai_edge_litert.tools import flatbuffer_utils
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    graph = model.subgraphs[0]
    scopes = [tfl_flatbuffer_utils.get_op_scope(op, graph.tensors) for op in graph.operators
              if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) in WEIGHTED_OPS]
    return sorted({scopes[0], scopes[-1]}) if scopes else []


def quantize_tflite(fp32_path: Path, out_path: Path, precision: str, *, calibration_x: np.ndarray | None = None,
                    keep_float: list[str] = ()) -> Path:
    """Write the `precision` variant of `fp32_path` to `out_path`, keeping its embedded metadata."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import algorithm_manager, calibrator, qtyping, quantizer, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(_recipe(precision))
    for scope in keep_float:  # the latest matching config wins: these scopes stay float
        manager.add_quantization_config(re.escape(scope), qtyping.TFLOperationName.ALL_SUPPORTED,
                                        algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    qt = quantizer.Quantizer(str(fp32_path), manager.get_quantization_recipe())
    calibration = None
    if qt.need_calibration:
        if calibration_x is None or len(calibration_x) == 0:
            raise ValueError("full int8 needs calibration samples")
        signatures = Interpreter(model_path=str(fp32_path)).get_signature_list()
        (signature, spec), = signatures.items()
        (name,) = spec["inputs"]
        ranges = calibrator.Calibrator(fp32_path.read_bytes(), qsv_update_func=qsv_utils.min_max_update)
        ranges.calibrate({signature: [{name: calibration_x[i:i + 1]} for i in range(len(calibration_x))]}, manager)
        calibration = ranges.get_model_qsvs()
    result = qt.quantize(calibration)
    write_with_metadata(bytes(result.quantized_model), out_path, read_metadata(fp32_path))
    return out_path
