"""Record a finished `edgedistill run` (of any pipeline): its stage times, accuracies, sizes and verdict, and
the machine it ran on, so that a README can quote a long run (Fashion-MNIST takes a quarter of an hour) with a
results file behind it.

Writes benchmarks/results/run_<pipeline>.json. Usage: python benchmarks/pipeline_run.py RUN_DIR [--note TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--note", default="", help="how the run was made (e.g. resumed after a student change)")
    args = parser.parse_args()
    manifest = json.loads((args.run / "manifest.json").read_text())
    results = json.loads((args.run / "report" / "results.json").read_text())
    record = {
        "pipeline": results["pipeline"], "device": results["device"]["name"], "generated_at": results["generated_at"],
        "host": platform.node(), "cpus": os.cpu_count(), "load_average_now": os.getloadavg(), "note": args.note,
        "stages_s": {name: s["seconds"] for name, s in manifest["stages"].items()},
        "resumed": [name for name, s in manifest["stages"].items() if s.get("resumed")],
        "teacher": results["teacher"], "student": results["student"],
        "artifacts": [{k: a.get(k) for k in ("format", "precision", "bytes", "accuracy", "latency_ms", "peak_rss_mb",
                                             "arm", "status")} for a in results["artifacts"]],
        "verdict": {k: results["verdict"].get(k) for k in ("fits", "scope", "summary")},
    }
    out = HERE / "results" / f"run_{results['pipeline']}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()
