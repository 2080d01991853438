"""The emulated ARM target: a real arm64 userland under real qemu-user, running the shipped runner on the
aarch64 builds of onnxruntime and LiteRT. Needs qemu-user-static and debootstrap (.ci/run installs them); the
userland is built once per test session (about a minute) in the session's private cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgedistill.bench import emulated
from tests.conftest import cli
from tests.optional import needs

pytestmark = [pytest.mark.slow, needs("qemu")]


@pytest.fixture(scope="module")
def userland():
    return emulated.setup()


@pytest.fixture(scope="module")
def int8_tflite(ssh_models, tmp_path_factory):
    """The tiny student as static int8 TFLite (ARM's int8 kernels are the ones most likely to differ)."""
    pytest.importorskip("litert_torch")
    from edgedistill.export.formats import FORMATS

    models, test_npz = ssh_models
    with np.load(test_npz) as data:
        x = data["x"]
    out = tmp_path_factory.mktemp("int8") / "m-int8.tflite"
    return FORMATS["tflite"].variant(models["tflite"], out, "int8", x, "minmax", [], {}), test_npz


def test_bench_on_emulated_arm_reports_aarch64_accuracy_and_agreement(userland, int8_tflite):
    model, test_npz = int8_tflite
    r = cli("bench", model, "--device", "raspberry-pi-4", "--target", "emulated", "--data", test_npz, "--json",
            timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    fidelity = json.loads(r.stdout)
    assert fidelity["machine"] == "aarch64" and fidelity["target"] == "emulated:cortex-a72"  # the profile's CPU
    assert fidelity["cpu"] == "cortex-a72" and "not a device latency" in fidelity["timing"]
    assert fidelity["samples"] == 40 and "ai_edge_litert" in fidelity["runtime"]
    # A correct ARM int8 kernel agrees with the x86 one on (nearly) every sample.
    assert fidelity["top1_agreement"] >= 0.95 and 0 <= fidelity["accuracy"] <= 1
    text = cli("bench", model, "--device", "raspberry-pi-4", "--target", "emulated:cortex-a76", "--data", test_npz,
               timeout=600)
    assert text.returncode == 0, text.stderr[-3000:]
    assert "emulated cortex-a76" in text.stdout and "not a device latency" in text.stdout
    assert "top-1 agreement with this host" in text.stdout


def test_qemu_max_cpu_is_never_used_and_unknown_cpus_are_refused(userland, int8_tflite):
    """qemu's default CPU ('max', with SME) computes wrong TFLite int8 results; only named CPUs are allowed."""
    model, test_npz = int8_tflite
    r = cli("bench", model, "--device", "raspberry-pi-4", "--target", "emulated:max", "--data", test_npz)
    assert r.returncode == 2 and "unknown emulated CPU 'max'" in r.stderr and "cortex-a72" in r.stderr


def test_the_userland_shows_the_cpu_it_emulates(userland):
    """onnxruntime reads /proc/cpuinfo on import (and crashes on an x86 one): under qemu the userland's must
    describe the CPU being emulated, switched per run."""
    show = ["-c", "import platform; print(platform.machine()); print(open('/proc/cpuinfo').read())"]
    for cpu in ("cortex-a72", "cortex-a76"):
        code, out, _ = emulated.run_python(show, cpu=cpu, timeout_s=120)
        text = out.decode()
        assert code == 0 and text.startswith("aarch64")
        assert f"CPU part\t: {emulated.CPUS[cpu].part}" in text and text.count("processor") == 4


def test_runs_at_once_each_see_their_own_cpu(userland):
    """The bench stage runs its artifacts at once: runs on the same CPU share the userland, runs on different
    CPUs take turns, and each sees the cpuinfo of the CPU it asked for, all through its run."""
    from concurrent.futures import ThreadPoolExecutor

    # The file is read at the start and again after a pause, as a runtime reading it late would.
    show = ["-c", "import time; a = open('/proc/cpuinfo').read(); time.sleep(1); print(a == open('/proc/cpuinfo')"
            ".read()); print(a)"]
    cpus = ["cortex-a72", "cortex-a76", "cortex-a72", "cortex-a76"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda cpu: emulated.run_python(show, cpu=cpu, timeout_s=120), cpus))
    for cpu, (code, out, _) in zip(cpus, answers):
        text = out.decode()
        assert code == 0 and text.startswith("True"), (cpu, text[:200])
        assert f"CPU part\t: {emulated.CPUS[cpu].part}" in text, cpu


def test_the_pipeline_reports_emulated_arm_beside_the_host(userland, tmp_path):
    """bench.emulate: on runs every artifact on the device's ARM CPU under qemu; the report shows its agreement
    beside the host's, and the verdict names it while saying the figures are this host's."""
    from tests.conftest import tiny_pipeline_dict, write_pipeline

    spec = tiny_pipeline_dict(export={"formats": ["onnx"], "precisions": ["fp32", "int8"]},
                              bench={"emulate": "on"})
    r = cli("run", write_pipeline(tmp_path / "p.yaml", spec), "--out", tmp_path / "run", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "report" / "results.json").read_text())
    for art in results["artifacts"]:
        arm = art["arm"]
        assert arm["status"] == "ok" and arm["machine"] == "aarch64" and arm["cpu"] == "cortex-a72"
        assert arm["samples"] == 360 and arm["top1_agreement"] >= 0.95 and 0 < arm["accuracy"] <= 1
        if art["precision"] == "fp32":  # the same fp32 model on ARM kernels: PyTorch's answers
            assert arm["top1_agreement"] == 1.0 and arm["max_abs_diff"] < 1e-4
    assert "on emulated cortex-a72 (ARM kernels, qemu)" in results["verdict"]["summary"]
    md = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "| on emulated ARM |" in md and "(cortex-a72, 360 samples)" in md
    # The accuracy gate judged int8 on the Pi's core (export.gate.judge_on: auto), this host's figure beside it.
    (int8,) = [a for a in results["artifacts"] if a["requested_precision"] == "int8"]
    assert int8["gate_judged_on"].startswith("onnxruntime on emulated cortex-a72 (qemu: raspberry-pi-4's ARM kernels)")
    first = int8["attempts"][0]
    assert first["judged_on"] == "emulated cortex-a72" and 0 < first["host_accuracy"] <= 1
    assert "judged on onnxruntime on emulated cortex-a72" in md and "| on this host |" in md
