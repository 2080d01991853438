"""Instruction-following students of a real teacher against the teacher itself, on the same runtime in one run.

Takes completed runs of a causal-LM pipeline (e.g. `edgedistill run pipelines/smollm2-rpi5.yaml`, once per
student size; the teacher's answers and top-k logits come from the cache after the first), exports the
teacher with the same KV-cache layout, and generates with the teacher's and every student's ONNX artifacts
one after the other through the runner on this host: time to first token on the same prompt, decode
tokens/s, peak RSS, and the graded held-out prompts. Capability kept is each student's score over the
teacher's, per category; the students' perplexity of the teacher's held-out answers comes from their runs.

Writes benchmarks/results/lm_instruct.json (lm_instruct_tflite.json with --format tflite) and the table in
benchmarks/README.md.
Usage: python benchmarks/lm_instruct.py RUN_DIR [RUN_DIR ...] [--format onnx] [--precision int8-weights]
       [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _readme import update_section

from edgedistill.bench.local import run_local
from edgedistill.config.pipeline import load_pipeline
from edgedistill.export.formats import FORMATS, artifact_name
from edgedistill.lm.chat import load_causal
from edgedistill.lm.formats import DECODER
from edgedistill.lm.instructions import Prompt, kept, scores
from edgedistill.stages.causal.bench import checked_answers
from edgedistill.stages.causal.export import cache_positions
from edgedistill.stages.causal.teacher import teacher_folder

HERE = Path(__file__).resolve().parent


def results_name(fmt: str, precision: str) -> str:
    """lm_instruct, then the format and the precision where they are not the first measured (onnx int8-weights)."""
    return ("lm_instruct" + ("" if fmt == "onnx" else f"_{fmt}")
            + ("" if precision == "int8-weights" else f"_{precision}"))


def results_path(fmt: str, precision: str) -> Path:
    return HERE / "results" / f"{results_name(fmt, precision)}.json"


def generate(model: Path, prompts_npz: Path, evaluation: list[Prompt], tokenizer, *, threads: int, runs: int,
             prompt_tokens: int) -> dict:
    result = run_local(model, prompts_npz, threads=threads, warmup_runs=1, warmup_s=0, runs=runs, min_time_s=0,
                       timeout_s=3600, seq_len=prompt_tokens)
    answers = checked_answers(result, len(evaluation))
    graded = scores(evaluation, [tokenizer.decode(a, skip_special_tokens=True) for a in answers])
    gen = result["generation"]
    return {"answers": answers, "bytes": model.stat().st_size, "ttft_ms_p50": gen["ttft_ms"]["p50"],
            "decode_tokens_per_s": gen["decode_tokens_per_s"], "ms_per_token_p90": result["latency_ms"]["p90"],
            "peak_rss_mb": result["peak_rss_mb"], "scores": graded, "prompt_tokens": gen["prompt_tokens"],
            "new_tokens": gen["new_tokens"]}


def which_student(answers: list[list[int]], distilled: Path) -> dict:
    """Share of held-out answers of the artifact identical, token for token, to the run's distilled PyTorch
    student's and to its undistilled start's (the distill stage keeps both): which model the artifact is."""
    saved = json.loads(distilled.read_text())
    same = lambda ids: sum(a == b for a, b in zip(answers, ids)) / len(answers)  # noqa: E731
    return {"distilled_pytorch": same(saved["ids"]),
            "undistilled_pytorch": same(saved["undistilled_ids"]) if "undistilled_ids" in saved else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="completed run folders of one causal-LM pipeline")
    parser.add_argument("--format", default="onnx", choices=["onnx", "tflite"])
    parser.add_argument("--precision", default="int8-weights", choices=["fp32", "int8-weights", "int8-dynamic"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed generations per model")
    args = parser.parse_args()
    manifests = [json.loads((run / "manifest.json").read_text()) for run in args.runs]
    spec = load_pipeline(args.runs[0] / "pipeline.resolved.yaml")
    teacher_stage = manifests[0]["stages"]["teacher"]
    evaluation = [Prompt(**p) for p in
                  json.loads((args.runs[0] / teacher_stage["outputs"]["prompts"]["path"]).read_text())["evaluation"]]
    prompts_npz = args.runs[0] / manifests[0]["stages"]["bench"]["outputs"]["prompts"]["path"]
    teacher, tokenizer = load_causal(teacher_folder(spec))
    common = {"threads": args.threads, "runs": args.repeats, "prompt_tokens": spec.bench.prompt_tokens}
    summary = {"benchmark": "lm_instruct", "date": time.strftime("%Y-%m-%d"), "format": args.format,
               "precision": args.precision,
               "machine": f"{os.cpu_count()} CPUs", "threads": args.threads, "teacher": spec.teacher.path,
               "teacher_params": teacher_stage["metrics"]["params"], "eval_prompts": len(evaluation),
               "teacher_pytorch_scores": teacher_stage["metrics"]["scores"], "students": []}
    with tempfile.TemporaryDirectory() as work:
        fmt = FORMATS[args.format]
        fp32 = Path(work) / artifact_name(args.format, "fp32")
        started = time.perf_counter()
        DECODER[args.format].export(teacher, fp32, opset=17, max_tokens=cache_positions(spec, tokenizer, evaluation),
                                    metadata={"model": "teacher"})
        path = fp32
        if args.precision != "fp32":
            path = Path(work) / artifact_name(args.format, args.precision)
            fmt.quantize(fp32, path, args.precision, None, None, [])
        summary["teacher_export_seconds"] = time.perf_counter() - started
        summary["teacher_runtime"] = generate(path, prompts_npz, evaluation, tokenizer, **common)
    teacher_rt = summary["teacher_runtime"]
    teacher_rt.pop("answers")
    for run, manifest in zip(args.runs, manifests):
        stages = manifest["stages"]
        artifact = run / stages["export"]["outputs"][f"{args.format}-{args.precision}"]["path"]
        student = generate(artifact, prompts_npz, evaluation, tokenizer, **common)
        distilled_answers = run / stages["distill"]["outputs"]["answers"]["path"]
        student["answers_match"] = which_student(student.pop("answers"), distilled_answers)
        distill = stages["distill"]["metrics"]
        student.update(arch=stages["student"]["metrics"]["arch"], params=stages["student"]["metrics"]["params"],
                       param_ratio=stages["student"]["metrics"]["param_ratio"], run=str(run),
                       pytorch_scores=distill["scores"], undistilled_scores=distill["undistilled"],
                       perplexity=distill["perplexity"], agreement=distill["agreement"],
                       distill_seconds=stages["distill"]["seconds"],
                       kept=kept(student["scores"], teacher_rt["scores"]),
                       speedup=student["decode_tokens_per_s"] / teacher_rt["decode_tokens_per_s"])
        summary["students"].append(student)
    summary["load_average"] = os.getloadavg()
    results = results_path(args.format, args.precision)
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps(summary, indent=2) + "\n")
    _update_readme(summary)


def _update_readme(s: dict) -> None:
    t = s["teacher_runtime"]

    def row(name, params, ratio, m, kept, speedup, ppl):
        sc = m["scores"]
        return (f"| {name} | {params:,} ({ratio:.0%}) | {sc['instructions']:.0%} | {sc['arithmetic']:.0%} | "
                f"{sc['facts']:.0%} | {sc['all']:.0%} | {kept} | {ppl} | {m['ttft_ms_p50']:.0f} | "
                f"{m['decode_tokens_per_s']:.1f} | {speedup} | {m['peak_rss_mb']:.0f} | {m['bytes'] / 2**20:.0f} |")

    rows = [f"Teacher `{Path(s['teacher']).name}` ({s['teacher_params']:,} params), every model as "
            f"{s['format']} {s['precision']} with its KV cache, generating on this host ({s['machine']}, "
            f"{s['threads']} threads; not a device) one after the other; time to first token on a "
            f"{t['prompt_tokens']}-token prompt, "
            f"decode speed over {t['new_tokens']} tokens; {s['eval_prompts']} graded held-out prompts, greedy; "
            f"{s['date']}, load average {s['load_average'][0]:.2f} at the end.", "",
            "| model | params | instructions | arithmetic | facts | all | kept (all) | perplexity | TTFT ms | "
            "tokens/s | vs teacher | peak RSS MB | MB |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            row("teacher", s["teacher_params"], 1.0, t, "—", "1.00×", "—")]
    for st in s["students"]:
        kept = "—" if st["kept"]["all"] is None else f"{st['kept']['all']:.0%}"
        rows.append(row(f"student {st['arch']}", st["params"], st["param_ratio"], st, kept, f"{st['speedup']:.2f}×",
                        f"{st['perplexity']['student']:.2f} (teacher {st['perplexity']['teacher']:.2f})"))
    for st in s["students"]:
        match = st.get("answers_match")
        if match:
            undistilled = match["undistilled_pytorch"]
            rows.append(f"\nThe {st['arch']} artifact's held-out answers are token for token its run's distilled "
                        f"PyTorch student's for {match['distilled_pytorch']:.0%} of the prompts"
                        + ("" if undistilled is None else f", the undistilled start's for {undistilled:.0%}") + ".")
    name = results_name(s["format"], s["precision"])
    update_section(name, f"## Instruction-following students of SmolLM2-135M-Instruct ({s['format']} "
                   f"{s['precision']})\n\n`python benchmarks/lm_instruct.py RUN_DIR [RUN_DIR ...] --format "
                   f"{s['format']} --precision {s['precision']}` (runs of causal-LM pipelines such as "
                   f"pipelines/smollm2-rpi5.yaml); results/{name}.json", rows)


if __name__ == "__main__":
    main()
