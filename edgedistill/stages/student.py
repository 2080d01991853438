"""Student stage: build the student the pipeline names, for the teacher's input and classes."""

from __future__ import annotations

from edgedistill.distill.trainer import seed_everything
from edgedistill.models import count_params
from edgedistill.models.io import ArchInfo, save_weights
from edgedistill.pipeline.engine import StageResult


def run(spec, ctx) -> StageResult:
    cfg = spec.student
    teacher = ArchInfo.load(ctx.output("teacher", "arch"))
    arch = ArchInfo(cfg.family, cfg.width, cfg.depth, teacher.in_channels, teacher.num_classes, teacher.input_hw,
                    teacher.class_names)
    seed_everything(spec.seed)
    model = arch.build()
    params = count_params(model)
    teacher_params = ctx.metrics("teacher")["params"]
    out = ctx.stage_dir("student")
    save_weights(model, out / "init.safetensors")
    arch.save(out / "arch.json")
    ratio = params / teacher_params
    ctx.console.print(f"  student {cfg.family} ×{cfg.width} depth ×{cfg.depth}: {params:,} params "
                      f"({ratio:.1%} of the teacher)")
    return StageResult(outputs={"weights": out / "init.safetensors", "arch": out / "arch.json"},
                       metrics={"family": cfg.family, "width": cfg.width, "depth": cfg.depth, "params": params,
                                "param_ratio": ratio})
