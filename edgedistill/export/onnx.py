"""PyTorch to ONNX with a dynamic batch axis, the ONNX checker, and metadata carried in the file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from edgedistill.errors import UserError
from edgedistill.fileio import atomic_output


def require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxruntime: pip install 'edgedistill[onnx]'") from None


def torch_to_onnx(model, sample_shape: tuple[int, ...], path: Path, *, opset: int, metadata: dict[str, object]) -> Path:
    """Export `model` (eval mode) to `path`; the batch axis is dynamic; `metadata` goes in metadata_props."""
    require_onnx()
    import onnx
    import torch

    model = model.eval()
    # dynamo=False: the TorchScript exporter needs no onnxscript and handles these models
    # (tests/test_export_quantize.py); its deprecation warning says nothing the user can act on.
    with atomic_output(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, *sample_shape[1:]),), str(tmp), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=opset, dynamo=False)
        onnx.checker.check_model(onnx.load(str(tmp)))
    set_metadata(path, metadata)
    return path


def set_metadata(path: Path, metadata: dict[str, object]) -> None:
    """Replace the file's metadata_props with `metadata` (values not already strings as JSON)."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    with atomic_output(path) as tmp:
        onnx.save(proto, str(tmp))


def read_metadata(path: Path) -> dict[str, object]:
    """metadata_props of an ONNX file, with JSON values decoded."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out: dict[str, object] = {}
    for entry in proto.metadata_props:
        try:
            out[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            out[entry.key] = entry.value
    return out


def onnx_outputs(path, x, batch_size: int = 256):
    """The model's outputs on `x` from onnxruntime's CPU provider, one thread, in batches."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)])
