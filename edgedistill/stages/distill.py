"""Distill stage: the configured loss terms and schedule, through teacher assistants when the width gap is
large; the best validation checkpoint is kept."""

from __future__ import annotations

import shutil

import torch

from edgedistill.data import load_dataset
from edgedistill.distill.distiller import assistant_widths, distill_model, width_ratio
from edgedistill.distill.trainer import accuracy, predict
from edgedistill.models import count_params
from edgedistill.models.io import ArchInfo, load_weights, pipeline_families, save_weights
from edgedistill.pipeline.engine import StageResult


def run(spec, ctx) -> StageResult:
    from edgedistill.distill.worker import release_ranks, run_distributed, torchrun_rank

    if torchrun_rank() is not None:  # started by torchrun on several ranks: they train this stage together
        release_ranks(ctx)
        return train(spec, ctx)
    if spec.distill.processes > 1:
        return run_distributed(spec, ctx)
    return train(spec, ctx)


def train(spec, ctx) -> StageResult:
    """The whole stage in this process: alone, or as one rank of a distributed run (rank 0 writes). This stage
    is the data-parallel one: a torchrun rank 0 trains the teacher alone before it, and the others wait."""
    from edgedistill.distill.compute import resolve
    from edgedistill.distill.parallel import DataParallel
    from edgedistill.models.teachers import has_layers

    parallel = DataParallel.current()
    compute = resolve(spec.train.device, spec.train.precision)
    cfg = spec.distill
    data = load_dataset(spec.data, spec.seed)
    teacher = load_teacher(spec, ctx)
    student_arch = ArchInfo.load(ctx.output("student", "arch"), pipeline_families(spec))
    student = student_arch.build()
    load_weights(student, ctx.output("student", "weights"))
    out = ctx.stage_dir("distill")
    state = f"{ctx.inputs_digest[:12]}.pt"

    # A compiled teacher has no layers to measure: no width gap is known, so no assistants unless asked for.
    ratio = width_ratio(student, teacher, torch.from_numpy(data.train.x[:2])) if has_layers(teacher) else 1.0
    progressive = cfg.progressive.mode == "on" or (cfg.progressive.mode == "auto"
                                                   and ratio >= cfg.progressive.threshold)
    assistants, source = [], teacher
    if progressive:
        for i, width in enumerate(assistant_widths(student_arch.width, ratio, cfg.progressive.assistants)):
            arch = ArchInfo(student_arch.family, width, student_arch.depth, student_arch.in_channels,
                            student_arch.num_classes, student_arch.input_hw, student_arch.class_names)
            assistant = arch.build()
            ctx.console.print(f"  teacher assistant {i + 1}: {arch.family} ×{width:.3g}, "
                              f"{count_params(assistant):,} params")
            hop = distill_model(assistant, source, data, cfg, seed=spec.seed, label=f"assistant {i + 1}",
                                console=ctx.console, state_path=out / f"assistant-{i + 1}-train-state-{state}",
                                parallel=parallel, compute=compute)
            assistants.append({"width": width, "params": count_params(assistant), "seconds": round(hop.seconds, 3),
                               "val_accuracy": hop.result.best_val_accuracy,
                               "accuracy": accuracy(predict(assistant, data.test.x), data.test.y)})
            source = assistant
    run = distill_model(student, source, data, cfg, seed=spec.seed, label="distill", console=ctx.console,
                        state_path=out / f"train-state-{state}", parallel=parallel, compute=compute)
    if parallel.is_main:
        save_weights(student, out / "distilled.safetensors")
    test_acc = accuracy(predict(student, data.test.x), data.test.y)
    resumed = run.result.resumed_from_epoch
    ctx.console.print(f"  student test accuracy {test_acc:.2%} (best epoch {run.result.best_epoch}, teacher outputs: "
                      f"{run.cache}" + (f", resumed after epoch {resumed}" if resumed else "") + ")")
    baseline = None if parallel.world > 1 else scratch_baseline(spec, ctx, student_arch, data, test_acc,
                                                                 out / f"baseline-train-state-{state}", compute)
    shipped = shipped_student(cfg.ship, run.result.best_val_accuracy, baseline)
    if parallel.is_main:
        shutil.copyfile(out / f"{shipped}.safetensors", out / "best.safetensors")
    if shipped == "scratch":
        ctx.console.print(f"  shipping the scratch student: it validated at {baseline['val_accuracy']:.2%}, the "
                          f"distilled one at {run.result.best_val_accuracy:.2%} (distill.ship: {cfg.ship})")
    flags = teacher_flags(ctx.metrics("teacher")["accuracy"], run.teacher_train_accuracy, baseline)
    for flag in flags:
        ctx.console.print(f"  [yellow]note:[/yellow] {flag}")
    warnings = [f"teacher-output cache: {run.cache}"] if run.cache.startswith(("rebuilt", "miss,")) else []
    return StageResult(outputs={"weights": out / "best.safetensors"}, warnings=warnings, metrics={
        "accuracy": baseline["accuracy"] if shipped == "scratch" else test_acc, "ship": cfg.ship, "shipped": shipped,
        "distilled_accuracy": test_acc, "val_accuracy": run.result.best_val_accuracy,
        "best_epoch": run.result.best_epoch,
        "epochs": cfg.epochs, "temperature": cfg.temperature, "alpha": cfg.alpha, "divergence": cfg.divergence,
        "terms": run.terms, "mapping": run.mapping, "phases": run.phases, "teacher_cache": run.cache,
        "width_ratio": ratio, "progressive": {"used": progressive, "threshold": cfg.progressive.threshold,
                                              "assistants": assistants,
                                              "extra_seconds": round(sum(a["seconds"] for a in assistants), 3)},
        "resumed_from_epoch": resumed, "history": run.result.history, "processes": parallel.world,
        "compute": compute.describe(), "baseline": baseline, "teacher_flags": flags,
        "teacher_train_accuracy": run.teacher_train_accuracy})


def shipped_student(ship: str, distilled_val_accuracy: float, baseline: dict | None) -> str:
    """Which student later stages get: "scratch" when asked for, or (ship: best) when the scratch baseline
    validates strictly higher than the distilled student; else "distilled". Decided on the validation split,
    so the test split stays unseen by the choice."""
    if baseline is None:
        return "distilled"
    if ship == "scratch" or (ship == "best" and baseline["val_accuracy"] > distilled_val_accuracy):
        return "scratch"
    return "distilled"


# A teacher at or above this on its own training split has little beyond the hard labels to give there.
MEMORIZED = 0.999


def teacher_flags(teacher_accuracy: float, teacher_train_accuracy: float, baseline: dict | None) -> list[str]:
    """What makes a teacher a poor source, measured in this run: below the student trained from labels alone,
    or perfect on the training split (its soft labels there are almost the hard ones) while distilling lost."""
    flags = []
    if baseline is not None and teacher_accuracy < baseline["accuracy"]:
        flags.append(f"weak teacher: its test accuracy {teacher_accuracy:.2%} is below the same student trained from "
                     f"labels alone ({baseline['accuracy']:.2%}); distilling teaches the student its mistakes")
    if baseline is not None and baseline["gain"] <= 0 and teacher_train_accuracy >= MEMORIZED:
        flags.append(f"the teacher is {teacher_train_accuracy:.2%} right on the training split: a teacher that fits "
                     "its training data perfectly gives soft labels there that are almost the hard ones; a teacher "
                     "stopped earlier, or trained on other data, usually teaches more")
    return flags


def scratch_baseline(spec, ctx, student_arch, data, distilled_accuracy: float, state_path,
                     compute=None) -> dict | None:
    """The same student from the same initial weights, trained from labels alone (distill.baseline), and the
    gain of distilling over it; None when not asked for. One process: under torchrun, where each rank holds a
    shard, the distill stage does not ask for it."""
    from edgedistill.config.pipeline import BASELINE_AUTO_EXAMPLES
    from edgedistill.distill.distiller import train_from_labels

    cfg = spec.distill
    wanted = cfg.baseline == "scratch" or (cfg.baseline == "auto"
                                           and len(data.train) * cfg.epochs <= BASELINE_AUTO_EXAMPLES)
    if not wanted:
        return None
    student = student_arch.build()
    load_weights(student, ctx.output("student", "weights"))
    from edgedistill.distill.compute import CPU

    run = train_from_labels(student, data, cfg, seed=spec.seed, console=ctx.console, state_path=state_path,
                            compute=compute or CPU)
    save_weights(student, ctx.stage_dir("distill") / "scratch.safetensors")
    scratch = accuracy(predict(student, data.test.x), data.test.y)
    gain = distilled_accuracy - scratch
    ctx.console.print(f"  baseline: the same student from labels alone {scratch:.2%}; distillation "
                      f"{'gained' if gain > 0 else 'did not help:'} {gain * 100:+.2f} points")
    return {"kind": "scratch", "accuracy": scratch, "val_accuracy": run.result.best_val_accuracy,
            "best_epoch": run.result.best_epoch, "epochs": cfg.epochs, "gain": gain, "seconds": round(run.seconds, 3)}


def load_teacher(spec, ctx):
    """The teacher stage's teacher: its saved weights, or the foreign model with the head it fitted."""
    from edgedistill.models.teachers import teacher_from_run

    outputs = ctx.record("teacher").outputs
    arch = ArchInfo.load(ctx.output("teacher", "arch"), pipeline_families(spec))
    return teacher_from_run(arch, getattr(spec.teacher, "path", None),
                            ctx.output("teacher", "weights") if "weights" in outputs else None,
                            ctx.output("teacher", "head") if "head" in outputs else None)


if __name__ == "__main__":  # a local rank of run_distributed's torchrun job
    import sys

    from edgedistill.distill.worker import main

    sys.exit(main(train))
