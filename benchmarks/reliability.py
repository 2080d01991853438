"""Reliability: faults injected and survived, bad inputs handled, security checks held, and what was lost.

Two parts. (1) The fault-injection, bad-input and security tests (real processes killed with SIGKILL, a real
tmpfs filled up, a real sshd dropped mid-benchmark and one with a forced command, truncated and overwritten
artifacts and cache entries, option-smuggling SSH targets, hostile profiles, YAML and npz bombs, over 40 bad
inputs through the CLI, a fuzz over pipeline YAML), counted from pytest's JUnit XML. (2) "Nothing lost",
measured: one uninterrupted run of a pipeline, then for each stage a run killed with SIGKILL while that stage
runs (the whole process group, mid-epoch for the training stages) and resumed with --resume, and a run whose
exported model is truncated after it finished, then resumed. Every finished artifact (weights, arch files,
every export, the benchmark's test data) is compared by sha256 with the uninterrupted run's, and so are the
results that do not depend on timing (accuracies, parity, sizes); an artifact missing is "lost", one that
differs is "changed". (Training is repeatable here since oneDNN is off in training: benchmarks/onednn_training.py.)
Writes benchmarks/results/reliability.json and the table in benchmarks/README.md.
Usage: python benchmarks/reliability.py [--groups faults,bad inputs,security] [--skip-lost]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml
from _readme import update_section

from edgedistill.config.device import host_cpu_flags

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "reliability.json"

GROUPS = {
    "faults": ["tests/test_faults.py", "tests/test_engine.py::test_truncated_output_is_caught_and_rebuilt",
               "tests/test_cli.py::test_kill_during_distill_then_resume",
               "tests/test_cli.py::test_unwritable_run_dir_is_a_clear_error",
               "tests/test_cli.py::test_failed_bench_still_reports",
               "tests/test_distributed.py::test_a_failing_rank_fails_the_run_naming_it_and_resume_recovers",
               "tests/test_hostile_runs.py::test_a_second_run_in_the_same_folder_is_refused_naming_the_first",
               "tests/test_hostile_runs.py::test_resume_reruns_a_stage_whose_file_was_replaced_at_the_same_path",
               "tests/test_hostile_files.py::test_a_truncated_cache_entry_is_rebuilt_not_fatal",
               "tests/test_hostile_files.py::test_a_cache_that_cannot_be_written_costs_speed_not_the_run",
               "tests/test_hostile_files.py::test_a_truncated_training_state_is_set_aside_not_fatal_forever"],
    "bad inputs": ["tests/test_bad_inputs.py", "tests/test_hostile_files.py::test_a_malformed_arch_json_is_one_line",
                   "tests/test_hostile_files.py::test_quantize_with_bad_calibration_data_is_one_line",
                   "tests/test_hostile_files.py::test_data_out_of_range_is_named_as_such",
                   "tests/test_hostile_files.py::test_a_checkpoint_with_nan_weights_says_so",
                   "tests/test_hostile_files.py::test_a_diverging_loss_names_the_cause",
                   "tests/test_hostile_files.py::test_a_vanishing_temperature_is_refused_at_validation",
                   "tests/test_hostile_runs.py::test_a_damaged_manifest_is_one_line_on_resume_and_report",
                   "tests/test_hostile_runs.py::test_a_name_with_a_nul_byte_is_one_line",
                   "tests/test_data.py", "tests/test_config.py"],
    "security": ["tests/test_hostile_ssh.py", "tests/test_hostile_inputs.py",
                 "tests/test_hostile_files.py::test_an_arch_json_cannot_import_code_unless_allowed",
                 "tests/test_hostile_files.py::test_an_overwritten_cache_entry_is_detected_discarded_and_rebuilt",
                 "tests/test_hostile_files.py::test_a_pickled_model_is_refused_without_advice_to_unpickle",
                 "tests/test_hostile_runs.py::test_a_pipeline_name_becomes_one_folder_under_runs",
                 "tests/test_hostile_runs.py::test_manifest_load_refuses_paths_outside_the_run",
                 "tests/test_hostile_runs.py::test_escape_codes_and_markup_from_files_never_reach_the_terminal_raw",
                 "tests/test_teacher_checkpoint.py::test_pickle_with_code_is_refused",
                 "tests/test_data.py::test_npz_with_pickled_objects_is_refused",
                 "tests/test_bench_ssh.py::test_unknown_host_key_is_refused_unless_trusted",
                 "tests/test_bench_ssh.py::test_file_names_with_spaces_and_semicolons",
                 "tests/test_bench_ssh.py::test_no_secrets_in_logs_or_reports",
                 "tests/test_report_html.py::test_user_strings_are_escaped",
                 "tests/test_report_html.py::test_compare_runs_in_folders_named_like_tex",
                 "tests/test_models.py::test_user_factory_is_imported_only_where_the_pipeline_names_it"],
    # Round 3 (the hostile-input probe of 2026-12): one group per class of hole it found.
    "code from data": [
        "tests/test_hostile_round3.py::test_a_pt2_with_a_pickled_weight_is_refused_before_anything_runs",
        "tests/test_hostile_round3.py::test_a_torchscript_teacher_that_touches_a_file_is_refused_and_the_file_kept",
        "tests/test_hostile_round3.py::test_a_received_run_folder_does_not_authorize_its_own_factory",
        "tests/test_hostile_round3.py::test_a_file_named_like_a_bundled_profile_does_not_replace_it",
        "tests/test_hostile_round3.py::test_a_hugging_face_folder_with_absurd_sizes_or_a_pickled_weight_is_one_line"],
    "links": [
        "tests/test_hostile_round3.py::test_a_symlinked_folder_in_a_run_is_refused_and_nothing_outside_written",
        "tests/test_hostile_round3.py::test_class_folders_linked_out_of_the_root_are_refused_unless_asked",
        "tests/test_hostile_round3.py::test_package_paths_may_not_climb_out_of_their_package"],
    "stale results": [
        "tests/test_hostile_round3.py::test_a_folder_of_more_than_10000_files_is_hashed_whole",
        "tests/test_hostile_round3.py::test_resume_without_out_never_takes_over_a_run_for_another_device"],
    "denial of service": [
        "tests/test_hostile_round3.py::test_a_thin_strip_image_is_refused_before_it_is_resized",
        "tests/test_hostile_round3.py::test_a_batch_too_large_to_decode_is_one_line",
        "tests/test_hostile_round3.py::test_a_backtracking_label_pattern_stops_with_one_line",
        "tests/test_hostile_round3.py::test_a_file_name_holding_a_huge_class_is_refused",
        "tests/test_hostile_round3.py::test_an_idx_bomb_is_refused_before_it_is_inflated",
        "tests/test_hostile_round3.py::test_a_cache_entry_truncated_while_a_stage_holds_it_does_not_kill_the_process"],
    "one-line messages": [
        "tests/test_hostile_round3.py::test_an_npy_header_too_large_is_one_line_without_advice_to_unpickle",
        "tests/test_hostile_round3.py::test_a_superscript_digit_in_a_file_name_is_one_line",
        "tests/test_hostile_round3.py::test_bench_on_emulated_arm_with_a_non_model_or_5d_data_is_one_line",
        "tests/test_report.py::test_a_failed_device_benchmark_leaves_no_device_scope",
        "tests/test_report.py::test_compared_runs_keep_their_table_whatever_the_folder_names",
        "tests/test_hostile_round3.py::test_a_truncated_pt2_is_one_line_without_torch_s_log",
        "tests/test_hostile_round3.py::test_a_device_s_answer_reaches_the_terminal_escaped"],
    "new user": [
        "tests/test_hostile_round3.py::test_mean_and_std_read_back_from_the_resolved_pipeline",
        "tests/test_report.py::test_every_markdown_table_has_as_many_cells_in_each_row_as_its_header",
        "tests/test_report.py::test_breaks_a_budget",
        "tests/test_hostile_round3.py::test_select_without_a_pipeline_says_whose_data_it_plans_for",
        "tests/test_hostile_round3.py::test_bench_data_says_when_a_folder_holds_the_training_images",
        "tests/test_hostile_round3.py::test_log_axis_labels_are_few_and_plain"],
}

# The fault pipeline: stages long enough to be caught running, both formats and two precisions exported.
PIPELINE = {
    "name": "reliability", "seed": 0, "device": "raspberry-pi-4", "budgets": {"max_accuracy_drop": 0.5},
    "data": {"kind": "digits"},
    "teacher": {"kind": "train", "family": "resnet", "width": 0.25, "depth": 0.5, "epochs": 15, "batch_size": 128},
    "student": {"family": "mobilenetv2", "width": 0.125, "depth": 0.5},
    "distill": {"epochs": 15, "batch_size": 128, "lr": 0.01, "baseline": "off"},
    "export": {"formats": ["onnx", "tflite"], "precisions": ["fp32", "int8"]},
    "bench": {"warmup_runs": 2, "warmup_s": 0, "runs": 2000, "min_time_s": 2.0},
}
# What each round-3 group tries, for the table.
ROUND3 = {
    "code from data": "a .pt2 with a pickled weight, a TorchScript teacher mapping a file, a received run folder's "
                      "factory, a profile-named file in the working folder, a Hugging Face folder with a pickled "
                      "weight or absurd sizes",
    "links": "symlinked report and stage folders, class folders linked out of data.root, package paths with ..",
    "stale results": "a late file replaced in a folder of 10,050, --resume across devices",
    "denial of service": "a 1x2,000,000 PNG, a 7.5 GiB batch, a backtracking label_pattern, class 10^9, an idx "
                         "bomb, a cache entry truncated while mapped",
    "one-line messages": "an oversized npy header, a superscript digit, bench on emulated ARM with a non-model or "
                         "5-D data, a failed device benchmark's verdict, newlines in compared run names, a truncated "
                         ".pt2, escape sequences in a device's answer",
    "new user": "mean/std in the resolved pipeline, report.md tables, the broken budget named, select's data, "
                "bench on training images, log-axis labels",
}
KILLED_IN = ("teacher", "distill", "export", "bench")
TIMED = {"bench", "report"}  # stages whose outputs hold timings: compared through their results instead


def run_group(tests: list[str], xml: Path) -> list[dict]:
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *tests],
                   cwd=REPO, capture_output=True, text=True)
    cases = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome = "failed" if case.find("failure") is not None or case.find("error") is not None else \
            "skipped" if case.find("skipped") is not None else "passed"
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome})
    return cases


def _edgedistill(*args: str, cwd: Path) -> subprocess.Popen:
    # A session of its own, so that a kill takes the runner and converters with it.
    return subprocess.Popen([sys.executable, "-m", "edgedistill", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _manifest(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def fingerprint(run_dir: Path) -> dict:
    """sha256 of every finished artifact but the timed ones, and the results that do not depend on timing."""
    manifest = _manifest(run_dir) or {"stages": {}}
    files = {f"{stage}/{key}": out["sha256"] for stage, rec in manifest["stages"].items() if stage not in TIMED
             for key, out in rec.get("outputs", {}).items()}
    bench = manifest["stages"].get("bench", {}).get("outputs", {})
    if "test_data" in bench:
        files["bench/test_data"] = bench["test_data"]["sha256"]
    results = json.loads((run_dir / "report" / "results.json").read_text())
    facts = {"teacher_accuracy": (results.get("teacher") or {}).get("accuracy"),
             "student_accuracy": (results.get("student") or {}).get("accuracy")}
    for art in results.get("artifacts", []):
        name = f"{art['format']}-{art['precision']}"
        facts.update({f"{name}.accuracy": art.get("accuracy"), f"{name}.bytes": art.get("bytes"),
                      f"{name}.parity": art.get("parity"), f"{name}.status": art.get("status")})
    return {"files": files, "results": facts}


def compare(reference: dict, after: dict) -> dict:
    lost = sorted(set(reference["files"]) - set(after["files"]))
    changed = sorted(k for k in reference["files"]
                     if k in after["files"] and after["files"][k] != reference["files"][k])
    results = sorted(k for k in reference["results"] if after["results"].get(k) != reference["results"][k])
    return {"lost": lost, "changed": changed, "results_changed": results}


def killed_then_resumed(stage: str, path: Path, run_dir: Path) -> dict:
    """Kill the run (SIGKILL, process group) while `stage` runs, mid-epoch for training stages; then resume."""
    proc = _edgedistill("run", str(path), "--out", str(run_dir), cwd=path.parent)
    deadline, killed = time.time() + 600, False
    while time.time() < deadline and proc.poll() is None:
        rec = (_manifest(run_dir) or {"stages": {}})["stages"].get(stage, {})
        # Training stages: wait for a saved epoch, so that resuming from the training state is what is tested.
        ready = rec.get("status") == "running" and (stage not in ("teacher", "distill")
                                                    or list((run_dir / stage).glob("train-state-*.pt")))
        if ready:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    proc.wait()
    resumed = subprocess.run([sys.executable, "-m", "edgedistill", "run", str(path), "--out", str(run_dir), "--resume"],
                             cwd=path.parent, capture_output=True, text=True, timeout=1200)
    return {"fault": f"SIGKILL in {stage}", "killed": killed, "resume_exit": resumed.returncode}


def truncated_then_resumed(path: Path, run_dir: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "edgedistill", "run", str(path), "--out", str(run_dir)],
                          cwd=path.parent, capture_output=True, text=True, timeout=1200)
    target = run_dir / "export" / "student-fp32.onnx"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    resumed = subprocess.run([sys.executable, "-m", "edgedistill", "run", str(path), "--out", str(run_dir), "--resume"],
                             cwd=path.parent, capture_output=True, text=True, timeout=1200)
    return {"fault": "exported model truncated after the run", "killed": done.returncode == 0,
            "resume_exit": resumed.returncode}


def measure_lost(workdir: Path) -> tuple[list[dict], int, int]:
    """The resumed runs compared with an uninterrupted one; how many artifacts and results each comparison covers."""
    path = workdir / "p.yaml"
    path.write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    reference_run = workdir / "reference"
    proc = subprocess.run([sys.executable, "-m", "edgedistill", "run", str(path), "--out", str(reference_run)],
                          cwd=workdir, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed:\n{proc.stderr[-2000:]}")
    reference = fingerprint(reference_run)
    cases = []
    for stage in KILLED_IN:
        case = killed_then_resumed(stage, path, workdir / f"kill-{stage}")
        cases.append({**case, **compare(reference, fingerprint(workdir / f"kill-{stage}"))})
        print(json.dumps(cases[-1]), flush=True)
    case = truncated_then_resumed(path, workdir / "truncated")
    cases.append({**case, **compare(reference, fingerprint(workdir / "truncated"))})
    print(json.dumps(cases[-1]), flush=True)
    return cases, len(reference["files"]), len(reference["results"])


def save(summary: dict) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default=",".join(GROUPS),
                        help="test groups to run again (the others keep their last results); '' for none")
    parser.add_argument("--skip-lost", action="store_true", help="keep the last lost-or-changed measurement")
    args = parser.parse_args()
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    summary = {**previous, "benchmark": "reliability", "date": time.strftime("%Y-%m-%d"), "cpu_flags": host_cpu_flags()}
    summary.setdefault("groups", {})
    with tempfile.TemporaryDirectory() as tmp:
        for name in [g for g in args.groups.split(",") if g]:
            cases = run_group(GROUPS[name], Path(tmp) / f"{name}.xml")
            summary["groups"][name] = {"cases": cases, "tried": len(cases), "date": time.strftime("%Y-%m-%d"),
                                       "passed": sum(c["outcome"] == "passed" for c in cases),
                                       "load_average_1m": round(os.getloadavg()[0], 2)}
            save(summary)  # each finished group is kept, should the rest be cut short
        if not args.skip_lost:
            faults, files, facts = measure_lost(Path(tmp))
            summary["resumed_runs"] = faults
            summary["compared"] = {"artifacts": files, "results": facts}
            summary["lost"] = sum(len(c["lost"]) for c in faults)
            summary["changed"] = sum(len(c["changed"]) + len(c["results_changed"]) for c in faults)
    faults, files, facts = summary["resumed_runs"], summary["compared"]["artifacts"], summary["compared"]["results"]
    summary["load_average_1m"] = round(os.getloadavg()[0], 2)
    save(summary)
    g = summary["groups"]
    resumed_ok = sum(c["killed"] and c["resume_exit"] == 0 for c in faults)
    flags = " ".join(summary.get("cpu_flags") or ["unknown"])
    rows = [f"{summary['date']}, this host (CPU flags: {flags}; 1-minute load {summary['load_average_1m']} at the "
            "end); test rows count pytest cases (the fuzz test is one case of 150 generated pipelines).",
            "", "| what | tried | survived / handled / held |", "|---|---|---|",
            "| faults injected (SIGKILL in each stage, truncated artifact and cache entry, full disk mid-run, "
            "read-only and unwritable run folder, failed benchmark, SSH device dropping off, failing distributed "
            "rank, two runs in one folder, inputs replaced before --resume, damaged training state) | "
            f"{g['faults']['tried']} | {g['faults']['passed']} |",
            "| bad inputs (pipelines, device profiles, CLI arguments, files that are not what they claim, malformed "
            "arch.json and manifests, data out of range, fuzz) | "
            f"{g['bad inputs']['tried']} | {g['bad inputs']['passed']} |",
            "| security (option-smuggling SSH targets, profile ssh_config and shadowing, flooding and stalling "
            "devices, unbelievable device answers, YAML and npz bombs, pickles, arch.json factories, overwritten "
            "cache entries, run names that are paths, terminal escapes, HTML escaping, no secrets in logs) | "
            f"{g['security']['tried']} | {g['security']['passed']} |",
            *(f"| round 3: {name} ({ROUND3[name]}) | {g[name]['tried']} | {g[name]['passed']} |"
              for name in ROUND3 if name in g),
            f"| runs killed (SIGKILL, whole process group) in {', '.join(KILLED_IN)}, or with an exported model "
            f"truncated, then `--resume` | {len(faults)} | {resumed_ok} |",
            f"| **artifacts lost or changed** after those resumes, against an uninterrupted run ({files} artifacts and "
            f"{facts} results compared by value, per resumed run) | | **{summary['lost']} lost, {summary['changed']} "
            f"changed** |"]
    update_section("reliability", "## Reliability\n\n`python benchmarks/reliability.py`", rows)
    print(json.dumps({k: (v["tried"], v["passed"]) for k, v in g.items()}), "lost:", summary["lost"],
          "changed:", summary["changed"])


if __name__ == "__main__":
    main()
