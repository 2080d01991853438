"""PyTorch to TFLite with litert-torch; metadata embedded in the flatbuffer; inference with int8 I/O handled.

A fully int8 model takes and returns int8 tensors: inputs are quantized with the input tensor's scale
and zero point, outputs dequantized with the output tensor's, so callers always see float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgedistill.bench.runner import from_output, to_input
from edgedistill.errors import UserError
from edgedistill.fileio import atomic_write_bytes
from edgedistill.quiet import quiet

METADATA_NAME = "edgedistill"


def require_litert():
    try:
        import ai_edge_litert  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError:
        raise UserError("TFLite export needs litert-torch and ai-edge-litert: "
                        "pip install 'edgedistill[tflite]'") from None


def torch_to_tflite(model, sample_shape: tuple[int, ...], path: Path, *, metadata: dict[str, object]) -> Path:
    """Convert `model` (eval mode) for a batch of one, embed `metadata`, write `path` atomically."""
    import torch

    return convert(model, (torch.zeros(1, *sample_shape[1:]),), path, metadata=metadata)


def convert(model, sample_args: tuple, path: Path, *, metadata: dict[str, object]) -> Path:
    """litert-torch conversion of `model` (eval mode) at the shapes and dtypes of `sample_args`."""
    require_litert()
    import litert_torch

    edge = litert_torch.convert(model.eval(), sample_args)
    tmp = path.with_name(f".{path.name}.convert.tmp")
    try:
        edge.export(str(tmp))
        data = tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    write_with_metadata(data, path, metadata)
    return path


def write_with_metadata(model_bytes: bytes, path: Path, metadata: dict[str, object]) -> None:
    """Write a .tflite with `metadata` as JSON in the flatbuffer's own metadata table (name 'edgedistill')."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    # read_model_from_bytearray folds buffers stored past the flatbuffer (offset/size) back in, so the
    # re-serialized model stays whole; large models are written that way by the converter.
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    model.metadata = [m for m in (model.metadata or []) if m.name.decode() != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata.append(entry)
    atomic_write_bytes(path, bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def read_metadata(path: Path) -> dict[str, object]:
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    for entry in model.metadata or []:
        if entry.name.decode() == METADATA_NAME:
            return json.loads(bytes(model.buffers[entry.buffer].data).decode())
    return {}


def input_quantization(path: Path) -> dict | None:
    """An integer input's scale and zero point (input = round(x / scale) + zero_point), or None for float."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet():
        detail = Interpreter(model_path=str(path)).get_input_details()[0]
    if detail["dtype"] not in (np.int8, np.uint8):
        return None
    scale, zero = detail["quantization"]
    return {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}


def tflite_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """Run the model on each sample of `x` (batch 1), converting int8 inputs and outputs."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet():  # the XNNPACK delegate announces itself on stderr
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if tuple(inp["shape"][1:]) != tuple(x.shape[1:]):
        raise ValueError(f"{path.name}: input shape {tuple(inp['shape'])} does not fit samples {x.shape[1:]}")
    results = []
    for i in range(len(x)):
        interpreter.set_tensor(inp["index"], to_input(x[i:i + 1], inp))
        interpreter.invoke()
        results.append(from_output(interpreter.get_tensor(out["index"]), out))
    return np.concatenate(results)
