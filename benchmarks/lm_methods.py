"""Ways of distilling an instruction-following student, each from the same start on the same prompts, graded on
the same held-out prompts in PyTorch: what each method adds to the share of the teacher's score the student keeps.

Runs the teacher and student stages of a causal-LM pipeline once into OUT/run (resumed when there), then, for each
method, the distill stage's teaching (stages/causal/distill.py:teach) with that method's settings over the
pipeline's `distill`, from the student stage's weights; the held-out prompts graded greedily as the stage does.
The teacher's answers to the training prompts are generated once (the cache); the top-k cache serves every
method with the same answers. Each finished method is written at once, and a method already in the results file
(same pipeline, prompts and settings) is not run again, so a long run can be stopped and continued.

Writes benchmarks/results/lm_methods_<pipeline>.json and the table in benchmarks/README.md.
Usage: python benchmarks/lm_methods.py PIPELINE.yaml --out WORK [--methods NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _readme import update_section
from rich.console import Console

from edgedistill.config.device import host_cpu, host_cpu_flags, load_device
from edgedistill.config.pipeline import load_pipeline
from edgedistill.distill.compute import resolve
from edgedistill.fileio import sha256_json
from edgedistill.lm.chat import chat_ids, load_causal
from edgedistill.lm.instructions import CATEGORIES, kept
from edgedistill.pipeline.engine import load_run, run_pipeline
from edgedistill.stages import default_stages
from edgedistill.stages.causal.distill import graded, teach
from edgedistill.stages.causal.teacher import load_prompts, teacher_folder

HERE = Path(__file__).resolve().parent

# name -> settings over the pipeline's distill section
METHODS = {
    "answers + top-k": {},
    "answers only": {"alpha": 0.0},
    "correct answers + top-k": {"answers": "correct"},
    "correct answers + top-k + on-policy": {"answers": "correct", "on_policy": {"rounds": 2, "prompts": 256}},
    "answers + top-k + on-policy": {"on_policy": {"rounds": 2, "prompts": 256}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="work folder: the teacher and student stages' run")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()
    console = Console(stderr=True)
    spec = load_pipeline(args.pipeline)
    run_dir = args.out / "run"
    stages = [s for s in default_stages(spec) if s.name in ("teacher", "student")]
    run_pipeline(spec, load_device(spec.device), stages, run_dir, resume=True, console=console)
    ctx = load_run(run_dir, console)
    teacher, tokenizer = load_causal(teacher_folder(spec))
    training, evaluation = load_prompts(ctx)
    eval_ids = [chat_ids(tokenizer, p.text) for p in evaluation]
    teacher_scores = ctx.metrics("teacher")["scores"]
    prompts_digest = sha256_json([p.text for p in training + evaluation])[:16]
    results = HERE / "results" / f"lm_methods_{spec.name}.json"
    record = json.loads(results.read_text()) if results.exists() else {"cells": []}
    record.update({"benchmark": "lm_methods", "pipeline": spec.name, "date": time.strftime("%Y-%m-%d"),
                   "host_cpu": host_cpu(), "cpu_flags_vnni": any("vnni" in f for f in host_cpu_flags()),
                   "cpus": os.cpu_count(), "teacher": spec.teacher.path,
                   "teacher_params": ctx.metrics("teacher")["params"], "teacher_scores": teacher_scores,
                   "student": ctx.metrics("student")["arch"], "student_params": ctx.metrics("student")["params"],
                   "param_ratio": ctx.metrics("student")["param_ratio"], "train_prompts": len(training),
                   "eval_prompts": len(evaluation), "prompts_digest": prompts_digest,
                   "measured": "PyTorch on this host, greedy, graded as the pipeline's distill stage does"})
    compute = resolve(spec.train.device, spec.train.precision)
    for name in args.methods:
        cfg = spec.distill.model_validate({**spec.distill.model_dump(), **METHODS[name]})
        settings = cfg.model_dump(mode="json")
        key = sha256_json({"settings": settings, "prompts": prompts_digest, "seed": spec.seed,
                           "student": ctx.metrics("student")["arch"]})[:16]
        if any(c["key"] == key for c in record["cells"]):
            console.print(f"{name}: in the results file already")
            continue
        student, _ = load_causal(ctx.output("student", "config").parent)
        console.print(f"[bold]{name}[/]")
        started = time.perf_counter()
        taught = teach(student, teacher, tokenizer, training, cfg, spec.data.answer_tokens, spec.seed, compute,
                       console)
        after = graded(student, tokenizer, evaluation, eval_ids, spec.data.answer_tokens, name, console)
        kept_share = kept(after["scores"], teacher_scores)
        record["cells"] = [c for c in record["cells"] if c["method"] != name] + [{
            "method": name, "key": key, "settings": METHODS[name], "scores": after["scores"], "kept": kept_share,
            "train_sequences": taught["train_sequences"], "answers_kept": taught["answers_kept"],
            "teacher_cache": taught["teacher_cache"], "train_seconds": taught["seconds"],
            "seconds": round(time.perf_counter() - started, 1), "load_average": os.getloadavg()}]
        results.write_text(json.dumps(record, indent=2) + "\n")
        share = "" if kept_share["all"] is None else f"; kept {kept_share['all']:.0%} of the teacher's score"
        console.print(f"  {name}: " + ", ".join(f"{k} {v:.0%}" for k, v in after["scores"].items()) + share)
        _update_readme(record)


def _update_readme(r: dict) -> None:
    t = r["teacher_scores"]
    head = ("| method | " + " | ".join(CATEGORIES) + " | all | kept (all) | kept (instructions) | trained on | "
            "train s | load |")
    rows = [f"Teacher `{Path(r['teacher']).name}` ({r['teacher_params']:,} params) → student {r['student']} "
            f"({r['param_ratio']:.1%} of its params), each method from the same start; {r['train_prompts']:,} "
            f"training prompts, {r['eval_prompts']} graded held-out prompts; {r['measured']} ({r['host_cpu']}, "
            f"{r['cpus']} CPUs), {r['date']}. Training seconds are wall time beside other jobs (load: the 1-minute "
            "load average when the method finished; 2 means both cores busy), so compare them only roughly.", "",
            head, "|---" * (len(CATEGORIES) + 7) + "|",
            "| teacher | " + " | ".join(f"{t[c]:.0%}" for c in CATEGORIES) + f" | {t['all']:.0%} | — | — | — | — | — |"]
    for c in r["cells"]:
        s, share = c["scores"], c["kept"]
        fmt = lambda v: "—" if v is None else f"{v:.0%}"  # noqa: E731
        rows.append(f"| {c['method']} | " + " | ".join(f"{s[k]:.0%}" for k in CATEGORIES)
                    + f" | {s['all']:.0%} | {fmt(share['all'])} | {fmt(share['instructions'])} | "
                    f"{c['answers_kept']} answers | {c['train_seconds']:.0f} | {c['load_average'][0]:.1f} |")
    update_section(f"lm_methods_{r['pipeline']}", f"## Distilling {r['pipeline']}: what each method adds\n\n"
                   f"`python benchmarks/lm_methods.py pipelines/{r['pipeline']}.yaml --out WORK`; "
                   f"results/lm_methods_{r['pipeline']}.json", rows)


if __name__ == "__main__":
    main()
