"""The bundled Fashion-MNIST pipeline on Debian's official files, end to end at a small share of the data
(the full run's time and numbers: README, "Fashion-MNIST"); and its one-line error when the package is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli
from tests.optional import needs

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "fashion-rpi4.yaml"
FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.mark.slow
@needs("fashion-mnist")
def test_fashion_pipeline_runs_on_a_share_of_the_real_files(tmp_path):
    raw = yaml.safe_load(PIPELINE.read_text())
    raw["data"]["subset"] = 0.05  # 3,000 training and 500 test images, every class in its share
    raw["teacher"]["epochs"] = 2
    raw["distill"].update(epochs=2, warmup_epochs=1)
    raw["bench"].update(runs=5, warmup_runs=1, min_time_s=0, emulate="off")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    proc = cli("run", tmp_path / "p.yaml", "--out", tmp_path / "run", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    # 10 classes, chance 10 %: far above it after 2 epochs. The figure depends on the host's kernels: 48.4 % on an
    # AMD EPYC host with AVX-512 and VNNI on 2026-12-05 (also with the code before that day's changes), above 50 %
    # on the host of the previous CI run.
    assert stages["teacher"]["metrics"]["accuracy"] > 0.3
    # Function matching, the method that did best at convergence (benchmarks/README.md): the teacher alone.
    assert stages["distill"]["metrics"]["terms"] == ["kd"]
    results = json.loads((tmp_path / "run" / "report" / "results.json").read_text())
    assert results["verdict"]["scope"] == "stand-in"  # measured here, standing in for the Pi: and it says so
    assert results["preprocessing"]["channels"] == "gray"


def test_missing_debian_package_is_one_line_naming_it(tmp_path):
    raw = yaml.safe_load(PIPELINE.read_text())
    for key in ("images", "labels", "test_images", "test_labels"):
        raw["data"][key] = raw["data"][key].replace("fashion-mnist", "fashion-mnist-missing")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    proc = cli("validate", tmp_path / "p.yaml")
    assert proc.returncode == 2 and "apt-get install dataset-fashion-mnist-missing" in proc.stderr
    assert "Traceback" not in proc.stderr
