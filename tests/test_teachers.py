"""Teachers from other frameworks (Hugging Face, TorchScript, torch.export, ONNX) and a new head for a teacher
whose classes are not the data's, through the real teacher and distill stages on digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rich.console import Console

from edgedistill.config.device import load_device
from edgedistill.config.pipeline import load_pipeline
from edgedistill.data import load_dataset
from edgedistill.distill.trainer import predict
from edgedistill.errors import UserError
from edgedistill.models import build_model
from edgedistill.models.io import save_weights
from edgedistill.models.teachers import load_foreign
from edgedistill.pipeline.engine import run_pipeline
from edgedistill.stages import default_stages
from tests.conftest import tiny_pipeline_dict, write_pipeline

ARCH = {"family": "resnet", "width": 0.25, "depth": 0.5}


def _model(num_classes=10):
    torch.manual_seed(0)
    return build_model(in_channels=1, num_classes=num_classes, input_hw=(8, 8), **ARCH).eval()


def _save(model, kind, folder):
    """`model` written as a user of that framework would write it."""
    sample = torch.zeros(2, 1, 8, 8)
    if kind == "torchscript":
        path = folder / "teacher.ts"
        torch.jit.save(torch.jit.trace(model, sample), str(path))
    elif kind == "exported":
        path = folder / "teacher.pt2"
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.export.save(torch.export.export(model, (sample,), dynamic_shapes=({0: batch},)), str(path))
    elif kind == "onnx":
        path = folder / "teacher.onnx"
        torch.onnx.export(model, (sample,), str(path), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    else:  # a checkpoint of one of our families
        path = folder / "teacher.safetensors"
        save_weights(model, path)
    return path


def _run(tmp_path, teacher: dict, stages: int = 1, **overrides):
    raw = tiny_pipeline_dict(**overrides)
    raw["teacher"] = teacher  # replaced whole, not merged into the default trained teacher
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = load_pipeline(write_pipeline(tmp_path / "p.yaml", raw))
    run_pipeline(spec, load_device(spec.device), default_stages()[:stages], tmp_path / "run",
                 console=Console(file=open("/dev/null", "w")))
    return json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]


@pytest.mark.parametrize("kind", ["torchscript", "exported", "onnx"])
def test_compiled_teachers_give_the_models_logits_and_distill(tmp_path, kind):
    model = _model()
    path = _save(model, kind, tmp_path)
    data = load_dataset(load_pipeline(write_pipeline(tmp_path / "d.yaml", tiny_pipeline_dict())).data, 0)
    expected = predict(model, data.test.x)
    assert np.allclose(predict(load_foreign(kind, path), data.test.x), expected, atol=1e-5)
    stages = _run(tmp_path, {"kind": kind, "path": str(path)}, stages=3)
    assert stages["teacher"]["metrics"]["source"] == kind
    assert stages["teacher"]["metrics"]["arch"] == f"{kind} model {path.name}"
    assert stages["teacher"]["metrics"]["accuracy"] == pytest.approx(float((expected.argmax(1) == data.test.y).mean()))
    params = sum(p.numel() for p in model.parameters())
    if kind == "onnx":  # the graph's weights: batch norms are folded into the convolutions on export
        assert 0.9 * params < stages["teacher"]["metrics"]["params"] < params
    else:
        assert stages["teacher"]["metrics"]["params"] == params
    assert stages["distill"]["status"] == "completed"


def test_huggingface_image_classifier_teacher(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=10)
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(config).eval()
    hf.save_pretrained(tmp_path / "vit")
    data = load_dataset(load_pipeline(write_pipeline(tmp_path / "d.yaml", tiny_pipeline_dict())).data, 0)
    with torch.no_grad():
        expected = hf(pixel_values=torch.from_numpy(data.test.x)).logits.numpy()
    assert np.allclose(predict(load_foreign("huggingface", tmp_path / "vit"), data.test.x), expected, atol=1e-5)
    stages = _run(tmp_path, {"kind": "huggingface", "path": str(tmp_path / "vit")}, stages=3,
                  distill={"features": {"weight": 0.5}})  # a module tree: its layers can be hooked
    assert stages["distill"]["status"] == "completed"
    assert stages["distill"]["metrics"]["mapping"]["features"]


def test_head_mismatch_stops_with_one_line_without_finetune(tmp_path):
    path = _save(_model(num_classes=5), "checkpoint", tmp_path)
    with pytest.raises(UserError, match=r"its head gives 5 classes and the data has 10: add teacher.finetune"):
        _run(tmp_path, {"kind": "checkpoint", "path": str(path), **ARCH})
    onnx_path = _save(_model(num_classes=5), "onnx", tmp_path)
    with pytest.raises(UserError, match=r"its head gives 5 classes and the data has 10"):
        _run(tmp_path / "o", {"kind": "onnx", "path": str(onnx_path)})


def test_finetune_fits_a_new_head_and_keeps_the_rest(tmp_path):
    original = _model(num_classes=5)
    path = _save(original, "checkpoint", tmp_path)
    stages = _run(tmp_path, {"kind": "checkpoint", "path": str(path), "finetune": {"epochs": 3}, **ARCH})
    tuned = stages["teacher"]["metrics"]["finetune"]
    assert tuned["head"] == "head.fc" and tuned["epochs"] == 3 and len(tuned["history"]) == 3
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "run" / "teacher" / "model.safetensors"))
    for name, value in original.state_dict().items():
        if not name.startswith("head.fc."):  # the backbone, batch-norm statistics included, is untouched
            assert torch.equal(saved[name], value), name
    assert saved["head.fc.weight"].shape == (10, original.head.fc.in_features)


def test_finetuned_onnx_teacher_reaches_the_distill_stage(tmp_path):
    path = _save(_model(num_classes=5), "onnx", tmp_path)
    stages = _run(tmp_path, {"kind": "onnx", "path": str(path), "finetune": {"epochs": 2}}, stages=3)
    assert stages["teacher"]["metrics"]["finetune"]["head"] == "new_head"
    assert "head" in stages["teacher"]["outputs"] and stages["distill"]["status"] == "completed"


def test_layer_terms_need_a_teacher_with_layers(tmp_path):
    path = _save(_model(), "onnx", tmp_path)
    raw = tiny_pipeline_dict(distill={"features": {"weight": 1.0}})
    raw["teacher"] = {"kind": "onnx", "path": str(path)}
    with pytest.raises(UserError, match=r"distill.features: reads the teacher's layers.*kind onnx gives logits only"):
        load_pipeline(write_pipeline(tmp_path / "p.yaml", raw))


def test_a_file_that_is_not_the_format_is_one_line(tmp_path):
    bad = tmp_path / "teacher.onnx"
    bad.write_bytes(b"not a model")
    for kind in ("onnx", "torchscript", "exported"):
        with pytest.raises(UserError, match=r"teacher.path: not a"):
            load_foreign(kind, bad)


def test_a_release_with_other_layer_names_and_other_classes_gets_a_new_head(tmp_path):
    """A checkpoint of the same architecture written by other code (its own layer names, 5 classes): matched in
    order and shape, and with finetune its classifier is fitted anew for the data's 10."""
    original = _model(num_classes=5)
    renamed = {f"release_{i:03d}.{name.rsplit('.', 1)[-1]}": v for i, (name, v) in
               enumerate(original.state_dict().items())}
    torch.save(renamed, tmp_path / "release.pth")
    with pytest.raises(UserError, match="its head gives 5 classes"):
        _run(tmp_path, {"kind": "checkpoint", "path": str(tmp_path / "release.pth"), **ARCH})
    stages = _run(tmp_path / "tuned", {"kind": "checkpoint", "path": str(tmp_path / "release.pth"),
                                       "finetune": {"epochs": 1}, **ARCH})
    assert stages["teacher"]["metrics"]["finetune"]["head"] == "head.fc"
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "tuned" / "run" / "teacher" / "model.safetensors"))
    assert torch.equal(saved["stem.0.weight"], original.state_dict()["stem.0.weight"])


def test_the_report_says_an_onnx_teachers_accuracy_came_from_onnx_runtime():
    from edgedistill.report.text import model_rows

    teacher = {"arch": "onnx model t.onnx", "params": 5002, "accuracy": 0.9, "source": "onnx"}
    (cells, _), = model_rows({"teacher": teacher, "student": None, "artifacts": []})
    assert cells[:2] == ["teacher onnx model t.onnx", "ONNX Runtime"]
    (cells, _), = model_rows({"teacher": {**teacher, "source": "torchscript"}, "student": None, "artifacts": []})
    assert cells[1] == "PyTorch"
