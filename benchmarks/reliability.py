"""Reliability table: faults injected and survived, bad inputs tried and handled, data lost.

Runs the fault-injection, bad-input and security tests (real processes killed with SIGKILL, a real tmpfs
filled up, a real sshd dropped mid-benchmark, truncated and corrupted artifacts, over 40 bad inputs through
the CLI, a fuzz over pipeline YAML, secrets planted in the environment of a run over SSH) and counts what passed from pytest's JUnit XML. A fault "survived" when its test passed: the run
resumed or reported, and every finished stage's artifacts kept their sha256; an input "handled" when it
gave exit 2 and one line, and left the user's files byte-identical. Data lost counts the fault and
bad-input cases that failed.
Writes benchmarks/results/reliability.json and the table in benchmarks/README.md.
Usage: python benchmarks/reliability.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from _readme import update_section

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "reliability.json"

GROUPS = {
    "faults": ["tests/test_faults.py", "tests/test_engine.py::test_truncated_output_is_caught_and_rebuilt",
               "tests/test_cli.py::test_kill_during_distill_then_resume",
               "tests/test_cli.py::test_unwritable_run_dir_is_a_clear_error",
               "tests/test_cli.py::test_failed_bench_still_reports",
               "tests/test_distributed.py::test_a_failing_rank_fails_the_run_naming_it_and_resume_recovers"],
    "bad inputs": ["tests/test_bad_inputs.py"],
    "security": ["tests/test_config.py::test_yaml_python_tags_are_rejected",
                 "tests/test_teacher_checkpoint.py::test_pickle_with_code_is_refused",
                 "tests/test_data.py::test_npz_with_pickled_objects_is_refused",
                 "tests/test_bench_ssh.py::test_unknown_host_key_is_refused_unless_trusted",
                 "tests/test_bench_ssh.py::test_file_names_with_spaces_and_semicolons",
                 "tests/test_bench_ssh.py::test_no_secrets_in_logs_or_reports",
                 "tests/test_report_html.py::test_user_strings_are_escaped",
                 "tests/test_models.py::test_user_factory_is_imported_only_where_the_pipeline_names_it"],
}


def run_group(tests: list[str], xml: Path) -> list[dict]:
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *tests],
                   cwd=REPO, capture_output=True, text=True)
    cases = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome = "failed" if case.find("failure") is not None or case.find("error") is not None else \
            "skipped" if case.find("skipped") is not None else "passed"
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome})
    return cases


def main() -> None:
    summary = {"benchmark": "reliability", "date": time.strftime("%Y-%m-%d"), "groups": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, tests in GROUPS.items():
            cases = run_group(tests, Path(tmp) / f"{name}.xml")
            summary["groups"][name] = {"cases": cases, "tried": len(cases),
                                       "passed": sum(c["outcome"] == "passed" for c in cases)}
    summary["data_lost"] = sum(summary["groups"][g]["tried"] - summary["groups"][g]["passed"]
                               for g in ("faults", "bad inputs"))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    g = summary["groups"]
    rows = [f"{summary['date']}; each row counts pytest cases (the fuzz test is one case of 150 generated pipelines).",
            "", "| what | tried | survived / handled |", "|---|---|---|",
            f"| faults injected (SIGKILL in each stage, truncated artifact, full disk mid-run, read-only and "
            f"unwritable run folder, failed benchmark, SSH device dropping off, failing distributed rank) | "
            f"{g['faults']['tried']} | {g['faults']['passed']} |",
            f"| bad inputs (pipelines, device profiles, CLI arguments, files that are not what they claim, fuzz) | "
            f"{g['bad inputs']['tried']} | {g['bad inputs']['passed']} |",
            f"| security (YAML tags, pickles in checkpoints and npz, unknown SSH host keys, hostile file names, "
            f"no secrets in logs or reports, HTML escaping, user factories imported only where named) | {g['security']['tried']} | {g['security']['passed']} |",
            f"| **data lost** | | **{summary['data_lost']}** |"]
    update_section("reliability", "## Reliability\n\n`python benchmarks/reliability.py`", rows)
    print(json.dumps({k: (v["tried"], v["passed"]) for k, v in g.items()}), "data lost:", summary["data_lost"])


if __name__ == "__main__":
    main()
