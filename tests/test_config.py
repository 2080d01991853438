"""Every bundled file loads; bad pipelines give one line naming file, field, value and choices; exit 2."""

from __future__ import annotations

import re

import pytest

from edgedistill.config.device import DeviceProfile, device_files, load_device
from edgedistill.config.pipeline import load_pipeline
from edgedistill.errors import UserError
from edgedistill.resources import bundled_dir
from tests.conftest import cli, tiny_pipeline_dict, write_pipeline
from tests.optional import have, install_line

PIPELINES = sorted(bundled_dir("pipelines").glob("*.yaml"))
DEVICES = sorted(bundled_dir("devices").glob("*.yaml"))
REQUIRED_DEVICES = {"raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano", "mobile-cpu", "host"}


# Pipelines that read an optional part `pip install -e ".[all]"` does not bring (tests/optional.py; README: how
# to add it): without it, loading says in one line which file is missing and the line that installs it.
NEEDS_OPTIONAL = {"smollm2-rpi5.yaml": "smollm2", "smollm2-rpi5-20.yaml": "smollm2",
                  "fashion-rpi4.yaml": "fashion-mnist"}


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_pipeline_loads(path):
    part = NEEDS_OPTIONAL.get(path.name)
    if part and not have(part):  # then it says how to get it, in one line
        with pytest.raises(UserError, match=re.escape(install_line(part))):
            load_pipeline(path)
        return
    spec = load_pipeline(path)
    assert spec.name and spec.device in device_files()


@pytest.mark.parametrize("path", DEVICES, ids=lambda p: p.name)
def test_every_device_loads_with_budgets(path):
    profile = load_device(str(path))
    assert isinstance(profile, DeviceProfile)
    assert profile.name == path.stem
    assert isinstance(profile.hardware.cores, int) and profile.hardware.cores >= 1
    assert isinstance(profile.hardware.ram_mb, int) and profile.hardware.ram_mb > 0
    budgets = profile.budgets
    assert None not in (budgets.max_model_mb, budgets.max_ram_mb, budgets.max_latency_p90_ms, budgets.max_accuracy_drop)


def test_required_devices_present_and_sourced():
    assert REQUIRED_DEVICES <= set(device_files())
    for name in REQUIRED_DEVICES:
        text = device_files()[name].read_text()
        # Every hardware figure carries its source or derivation in a comment.
        for field in ("peak_gflops_fp32", "peak_gops_int8", "memory_bandwidth_gbps"):
            line = next(line for line in text.splitlines() if line.strip().startswith(field))
            assert "#" in line, f"{name}: {field} has no source comment"


def test_host_profile_reads_this_machine():
    import os

    host = load_device("host")
    assert host.hardware.cores == len(os.sched_getaffinity(0))
    assert host.hardware.processor != "auto"


def test_cli_overrides_replace_top_level_keys(tiny_pipeline):
    spec = load_pipeline(tiny_pipeline, overrides={"device": "jetson-nano", "seed": 7})
    assert (spec.device, spec.seed) == ("jetson-nano", 7)


def _bad(tmp_path, **overrides):
    return write_pipeline(tmp_path / "bad.yaml", tiny_pipeline_dict(**overrides))


BAD_PIPELINES = {
    "unknown key": ({"distill": {"temprature": 4}}, ["distill.temprature", "did you mean 'temperature'"]),
    "wrong type": ({"distill": {"epochs": "ten"}}, ["distill.epochs", "'ten'"]),
    "out of range": ({"distill": {"alpha": 1.5}}, ["distill.alpha", "1.5"]),
    "unknown device": ({"device": "raspbery-pi-4"}, ["device", "did you mean 'raspberry-pi-4'", "jetson-nano"]),
    "missing data file": ({"data": {"kind": "npz", "path": "nowhere.npz"}}, ["data.path", "nowhere.npz", "not found"]),
    "unknown data kind": ({"data": {"kind": "digitz"}}, ["data.kind", "did you mean 'digits'", "npz"]),
    "unknown family": ({"student": {"family": "mobilenet"}}, ["student.family", "mobilenetv2", "resnet"]),
    "unknown format": ({"export": {"formats": ["onnx", "tflit"]}}, ["export.formats", "'tflit'", "valid: onnx"]),
    "unknown top-level key": ({"distil": {"epochs": 1}}, ["distil", "did you mean 'distill'"]),
}


@pytest.mark.parametrize("case", BAD_PIPELINES, ids=list(BAD_PIPELINES))
def test_bad_pipeline_is_one_line_exit_2(tmp_path, case):
    overrides, expected = BAD_PIPELINES[case]
    path = _bad(tmp_path, **overrides)
    with pytest.raises(UserError) as err:
        load_pipeline(path)
    message = str(err.value)
    assert message.startswith(f"{path}:") and "\n" not in message
    for piece in expected:
        assert piece in message, message


@pytest.mark.parametrize("case", ["unknown key", "wrong type", "unknown device", "missing data file"])
def test_bad_pipeline_via_cli(tmp_path, case):
    overrides, expected = BAD_PIPELINES[case]
    path = _bad(tmp_path, **overrides)
    proc = cli("run", path, "--out", tmp_path / "run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    assert all(piece in lines[0] for piece in expected)
    assert not (tmp_path / "run").exists(), "a rejected pipeline must not create a run folder"


def test_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndevice: host\ndata: {kind: digits}\nteacher: {kind: train}\nstudent:\n  widht: 0.5\n")
    with pytest.raises(UserError, match=r"bad\.yaml:6: student\.widht: unknown key 'widht'; did you mean 'width'"):
        load_pipeline(path)


def test_yaml_python_tags_are_rejected(tmp_path):
    path = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    path.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(UserError, match="not valid YAML"):
        load_pipeline(path)
    assert not marker.exists()


def test_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_pipeline(path)


def test_missing_required_field(tmp_path):
    spec = tiny_pipeline_dict()
    del spec["student"]
    with pytest.raises(UserError, match="student: required field is missing"):
        load_pipeline(write_pipeline(tmp_path / "p.yaml", spec))


def test_cli_device_override_unknown(tiny_pipeline, tmp_path):
    proc = cli("run", tiny_pipeline, "--device", "jetsn-nano", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: --device: unknown device 'jetsn-nano'; did you mean 'jetson-nano'? "
                                   "(valid: host, jetson-nano, jetson-orin-nano, mobile-cpu, raspberry-pi-4, "
                                   "raspberry-pi-5)")


def test_bad_device_profile(tmp_path):
    path = tmp_path / "dev.yaml"
    text = device_files()["raspberry-pi-4"].read_text().replace("  clock_ghz: 1.5", "  clock_ghz: -1")
    path.write_text(text)
    with pytest.raises(UserError, match=r"dev\.yaml:\d+: hardware\.clock_ghz: .*greater than 0, got -1"):
        load_device(str(path))


def test_an_unquoted_yaml_off_gets_a_hint_to_quote_it(tmp_path):
    from edgedistill.config.pipeline import load_pipeline
    from edgedistill.errors import UserError
    from tests.conftest import tiny_pipeline_dict, write_pipeline

    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict())
    text = path.read_text()
    assert "baseline: 'off'" in text  # safe_dump quotes it; a person typing it often does not
    path.write_text(text.replace("baseline: 'off'", "baseline: off"))
    with pytest.raises(UserError, match=r"distill.baseline: unknown value False.*quote the word \('off'\)"):
        load_pipeline(path)


def test_shipping_the_scratch_student_needs_its_baseline(tmp_path):
    spec = tiny_pipeline_dict(distill={"ship": "scratch", "baseline": "off"})
    with pytest.raises(UserError, match=r"p\.yaml:\d+: distill: .*ship: scratch ships the scratch baseline, which "
                                        r"baseline: 'off' does not train"):
        load_pipeline(write_pipeline(tmp_path / "p.yaml", spec))
    assert load_pipeline(write_pipeline(tmp_path / "q.yaml", tiny_pipeline_dict())).distill.ship == "best"
