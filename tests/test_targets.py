"""The target registry: every transport is a `Target` found by its address; a new one is one module."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from edgedistill.bench.targets import TARGETS, check_target, get_target
from edgedistill.config.device import load_device
from edgedistill.errors import UserError
from tests.conftest import cli

PLUGIN = '''
"""A target of another package: the runner in a subprocess whose working folder is the one the address names."""
import shutil
from pathlib import Path

from edgedistill.bench.local import run_local
from edgedistill.bench.targets import Target, register_target


@register_target
class InFolder(Target):
    scheme, syntax = "infolder", "infolder:FOLDER"

    @classmethod
    def check(cls, address):
        if not Path(address.partition(":")[2]).is_dir():
            raise ValueError(f"{address!r}: expected infolder:FOLDER, an existing folder")

    def run(self, device, model, data, *, trust_new_host=False, ssh_config=None, **options):
        folder = Path(self.address.partition(":")[2])
        copies = [shutil.copy(p, folder) if p else None for p in (model, data)]
        result = run_local(Path(copies[0]), Path(copies[1]) if copies[1] else None,
                           providers=list(device.execution_providers), **options)
        return {**result, "target": self.address, "ran_in": str(folder)}
'''


def test_a_target_in_one_module_of_another_package_is_used_by_bench(tmp_path, ssh_models):
    """Registered through the entry-point group `edgedistill.targets` of a package on the path: no module of
    edgedistill knows it, and `edgedistill bench --target` runs it."""
    site = tmp_path / "site"
    (site / "infolder_target-0.1.dist-info").mkdir(parents=True)
    (site / "infolder_target.py").write_text(PLUGIN)
    (site / "infolder_target-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: infolder-target\nVersion: 0.1\n")
    (site / "infolder_target-0.1.dist-info" / "entry_points.txt").write_text(
        "[edgedistill.targets]\ninfolder = infolder_target\n")
    work = tmp_path / "work"
    work.mkdir()
    models, test_npz = ssh_models
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = cli("bench", models["onnx"], "--device", "host", "--target", f"infolder:{work}", "--data", test_npz,
               "--runs", "3", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["target"] == f"infolder:{work}" and result["ran_in"] == str(work)
    assert result["accuracy"] is not None and (work / models["onnx"].name).is_file()
    proc = cli("bench", models["onnx"], "--device", "host", "--target", f"infolder:{tmp_path / 'none'}", env=env)
    assert proc.returncode == 2 and "expected infolder:FOLDER, an existing folder" in proc.stderr
    proc = cli("bench", models["onnx"], "--device", "host", "--target", "infolder:x")  # without the package
    assert proc.returncode == 2 and "expected auto, local, ssh://[user@]host[:port], emulated[:cpu]" in proc.stderr


def test_addresses_find_their_target_and_say_whose_figures_they_give():
    pi4, host = load_device("raspberry-pi-4"), load_device("host")
    assert {"local", "ssh", "emulated"} <= set(TARGETS)
    assert get_target("auto", pi4).evidence(pi4) == "stand-in" and get_target("local", host).evidence(host) == "host"
    assert get_target("ssh://pi@raspberrypi.local", pi4).evidence(pi4) == "device"
    assert get_target("emulated", pi4).cpu(pi4) == "cortex-a72"
    assert get_target("emulated:cortex-a76", pi4).cpu(pi4) == "cortex-a76"
    with pytest.raises(ValueError, match="measures fidelity, not timing"):  # a pipeline's bench.target times
        check_target("emulated")
    with pytest.raises(ValueError, match="a user or host may not start with '-'"):
        check_target("ssh://-oProxyCommand=x")
    with pytest.raises(UserError, match="unknown emulated CPU 'max'"):
        get_target("emulated:max", pi4)
    with pytest.raises(ValueError, match=textwrap.shorten("'ftp://x': expected auto, local", 40, placeholder="")):
        check_target("ftp://x")
