"""Export stage: each format in the pipeline, each artifact checked for parity with PyTorch.

A format that fails to convert records its error; the other formats go on.
"""

from __future__ import annotations

from edgedistill.data import load_dataset
from edgedistill.distill.trainer import predict
from edgedistill.errors import StageFailed
from edgedistill.export.formats import get_format
from edgedistill.export.onnx import torch_to_onnx
from edgedistill.export.parity import compare, onnx_outputs
from edgedistill.fileio import sha256_json
from edgedistill.models.io import ArchInfo, load_weights
from edgedistill.pipeline.engine import StageResult


def run(spec, ctx) -> StageResult:
    cfg = spec.export
    data = load_dataset(spec.data, spec.seed)
    arch = ArchInfo.load(ctx.output("student", "arch"))
    model = arch.build()
    load_weights(model, ctx.output("distill", "weights"))
    reference = predict(model, data.test.x)
    out = ctx.stage_dir("export")
    metadata = {"pipeline": spec.name, "config_digest": sha256_json(spec.model_dump(mode="json")),
                "input_shape": [None, *data.input_shape], "input_dtype": "float32", "precision": "fp32",
                "class_names": arch.class_names, "model": f"{arch.family} x{arch.width} depth x{arch.depth}"}
    artifacts, outputs, warnings = [], {}, []
    for name in cfg.formats:
        fmt = get_format(name)
        path = out / f"student{fmt.suffix}"
        record = {"format": name, "precision": "fp32", "path": str(path.relative_to(ctx.run_dir))}
        try:
            torch_to_onnx(model, (1, *data.input_shape), path, opset=cfg.opset, metadata=metadata)
            parity = compare(reference, onnx_outputs(path, data.test.x), data.test.y, cfg.parity_atol, name)
            record.update(status="ok", bytes=path.stat().st_size, parity=parity.as_dict())
            if not parity.within_tolerance:
                warnings.append(f"{name}: max |Δ| {parity.max_abs_diff:.2e} exceeds parity_atol {cfg.parity_atol:g}")
            outputs[name] = path
            ctx.console.print(f"  {name} fp32: {path.stat().st_size / 1024:.1f} KiB, max |Δ| {parity.max_abs_diff:.1e}, "
                              f"top-1 agreement {parity.top1_agreement:.1%}")
        except Exception as exc:  # noqa: BLE001 - one failed format is recorded, the others go on
            record.update(status="failed", error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}")
            warnings.append(f"{name}: export failed: {record['error']}")
        artifacts.append(record)
    if not outputs:
        raise StageFailed("no format exported: " + "; ".join(a["error"] for a in artifacts))
    return StageResult(outputs=outputs, metrics={"artifacts": artifacts}, warnings=warnings)
