"""How far a reader walks to follow the distill stage: the functions of edgedistill/distill/ and
edgedistill/stages/distill.py that one distill stage calls, each at its first call, in call order, read as
stays in modules; a return is a stay in a module the walk has already been in (stays minus modules).
Comprehensions and lambdas are not counted, nor modules outside the distillation path (models, data, files).

Runs a tiny digits pipeline (1 teacher and 2 distill epochs) in a temporary folder, then the distill stage again
under a profiler. Writes benchmarks/results/distill_walk.json (the walk, stay by stay) and prints the counts.
Usage: python benchmarks/distill_walk.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _readme import update_section
from rich.console import Console

from edgedistill.config.device import load_device
from edgedistill.config.pipeline import load_pipeline
from edgedistill.pipeline.engine import load_run, run_pipeline
from edgedistill.quiet import quiet
from edgedistill.stages import default_stages

RESULTS = Path(__file__).resolve().parent / "results" / "distill_walk.json"
SPEC = {"name": "walk", "seed": 0, "device": "raspberry-pi-4", "data": {"kind": "digits"},
        "teacher": {"kind": "train", "family": "resnet", "width": 0.25, "depth": 0.5, "epochs": 1},
        "student": {"family": "mobilenetv2", "width": 0.125, "depth": 0.5},
        "distill": {"epochs": 2, "batch_size": 128, "baseline": "scratch"},
        "export": {"formats": ["onnx"]}, "bench": {"runs": 2, "min_time_s": 0, "emulate": "off"}}


def on_the_path(module: str) -> bool:
    return module.startswith("edgedistill.distill") or module == "edgedistill.stages.distill"


def walk_of(stage, spec, ctx) -> list[tuple[str, str]]:
    """(module, function) at each first call, in order, while `stage(spec, ctx)` runs."""
    seen, walk = set(), []

    def profile(frame, event, arg):
        code = frame.f_code
        module = frame.f_globals.get("__name__", "")
        if event != "call" or not on_the_path(module) or code.co_name.startswith("<"):
            return
        key = (module, code.co_name, code.co_firstlineno)
        if key not in seen:
            seen.add(key)
            walk.append((module, code.co_name))

    sys.setprofile(profile)
    try:
        with quiet():
            stage(spec, ctx)
    finally:
        sys.setprofile(None)
    return walk


def main() -> None:
    import edgedistill.stages.distill as distill_stage

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "walk.yaml"
        path.write_text(yaml.safe_dump(SPEC))
        spec = load_pipeline(path)
        run_dir = Path(tmp) / "run"
        run_pipeline(spec, load_device(spec.device), default_stages(), run_dir, console=Console(quiet=True))
        for state in (run_dir / "distill").glob("*train-state*"):
            state.unlink()  # the stage trains again, not resumes
        ctx = load_run(run_dir, Console(quiet=True))
        walk = walk_of(distill_stage.run, ctx.spec, ctx)
    stays: list[dict] = []
    for module, function in walk:
        if not stays or stays[-1]["module"] != module:
            stays.append({"module": module, "functions": []})
        stays[-1]["functions"].append(function)
    modules = {s["module"] for s in stays}
    summary = {"benchmark": "distill_walk", "date": time.strftime("%Y-%m-%d"), "stays": len(stays),
               "modules": len(modules), "returns": len(stays) - len(modules),
               "entries": {m: sum(s["module"] == m for s in stays) for m in sorted(modules)}, "walk": stays}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    rows = [f"{summary['stays']} stays in {summary['modules']} modules, **{summary['returns']} returns** "
            f"({summary['date']}). Entries per module:", "", "| module | entries |", "|---|---|"]
    rows += [f"| {m.removeprefix('edgedistill.')} | {n} |"
             for m, n in sorted(summary["entries"].items(), key=lambda kv: -kv[1])]
    update_section("distill_walk", "## The distill walk\n\n`python benchmarks/distill_walk.py`: how many times a "
                   "reader following one distill stage changes module (a code-structure measure, not a speed)", rows)
    print(f"{summary['stays']} stays in {summary['modules']} modules, {summary['returns']} returns")


if __name__ == "__main__":
    main()
