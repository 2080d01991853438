"""A corpus of bad inputs through the real CLI: each is exit 2, one line naming the problem, no traceback.

Pipelines, device profiles and CLI arguments with wrong keys, types, ranges and missing files, and files
that are not what they claim (a pickle that runs code, an ONNX file that is not one, models whose input
dtype the runner cannot feed, an npz with mismatched shapes). A hypothesis fuzz test runs over pipeline YAML.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgedistill.config.device import device_files
from edgedistill.config.pipeline import load_pipeline
from edgedistill.errors import UserError
from tests.conftest import cli, tiny_pipeline_dict, write_pipeline

PASSWORD = "hunter2-Sup3rSecret"


class RunsCode:
    """Unpickling this calls os.system: what weights_only loading must refuse."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def _pipeline(tmp, **overrides):
    return ["validate", write_pipeline(tmp / "p.yaml", tiny_pipeline_dict(**overrides))]


def _device(tmp, replace: tuple[str, str]):
    text = device_files()["host"].read_text()
    assert replace[0] in text
    path = tmp / "dev.yaml"
    path.write_text(text.replace(*replace))
    return ["validate", path]


def _file(tmp, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def _bool_input_onnx(tmp) -> str:
    """A valid ONNX model whose input is a bool mask: nothing the runner can fill with meaning."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["mask"], ["f"], to=TensorProto.FLOAT), helper.make_node("Flatten", ["f"], ["y"])],
        "bool_input", [helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
    path = tmp / "mask.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def _bool_input_tflite(tmp) -> str:
    """The same through the real PyTorch-to-LiteRT converter."""
    import litert_torch
    import torch

    class Mask(torch.nn.Module):
        def forward(self, mask):
            return mask.float().flatten(1)

    path = tmp / "mask.tflite"
    litert_torch.convert(Mask().eval(), (torch.zeros(1, 1, 8, 8, dtype=torch.bool),)).export(str(path))
    return str(path)


def _encoder_run(tmp) -> str:
    """The layout a text pipeline leaves: its student is a Hugging Face folder, not arch.json + weights."""
    (tmp / "run" / "distill" / "model").mkdir(parents=True)
    (tmp / "run" / "distill" / "model" / "config.json").write_text('{"model_type": "bert"}')
    return str(tmp / "run")


def _npz(tmp, **arrays) -> str:
    path = tmp / "data.npz"
    np.savez(path, **arrays)
    return str(path)


CASES = {
    # pipelines: keys, types, ranges, files
    "pipeline unknown key": (lambda t: _pipeline(t, distill={"temprature": 4}), "did you mean 'temperature'"),
    "pipeline wrong type": (lambda t: _pipeline(t, distill={"epochs": "ten"}), "distill.epochs"),
    "pipeline out of range": (lambda t: _pipeline(t, distill={"alpha": 1.5}), "distill.alpha"),
    "pipeline negative lr": (lambda t: _pipeline(t, distill={"lr": -1}), "distill.lr"),
    "pipeline unknown device": (lambda t: _pipeline(t, device="raspbery-pi-4"), "did you mean 'raspberry-pi-4'"),
    "pipeline unknown family": (lambda t: _pipeline(t, student={"family": "vgg"}), "student.family"),
    "pipeline unknown divergence": (lambda t: _pipeline(t, distill={"divergence": "kl"}), "distill.divergence"),
    "pipeline unknown precision": (lambda t: _pipeline(t, export={"precisions": ["int4"]}), "export.precisions"),
    "pipeline phases not summing to 1": (lambda t: _pipeline(t, distill={"schedule": [{"name": "distill",
                                                                                       "fraction": 0.5}]}),
                                         "phase fractions must add up to 1"),
    "pipeline missing npz": (lambda t: _pipeline(t, data={"kind": "npz", "path": str(t / "none.npz")}), "not found"),
    "pipeline missing checkpoint": (lambda t: _pipeline(t, teacher={"kind": "checkpoint", "family": "resnet",
                                                                    "path": str(t / "none.pt")}), "not found"),
    "pipeline size auto with width": (lambda t: _pipeline(t, student={"size": "auto"}), "size auto chooses"),
    "pipeline bad ssh target": (lambda t: _pipeline(t, bench={"target": "ftp://pi"}), "bench.target"),
    "pipeline not a mapping": (lambda t: ["validate", _file(t, "p.yaml", b"- just\n- a list\n")], "p.yaml"),
    "pipeline python tag": (lambda t: ["validate", _file(t, "p.yaml", b"name: !!python/object/apply:os.system "
                                                                       b"['true']\n")], "p.yaml"),
    "pipeline file missing": (lambda t: ["run", str(t / "nowhere.yaml")], "nowhere.yaml"),
    # device profiles
    "device unknown key": (lambda t: _device(t, ("ram_mb: auto", "ram_mb: auto\n  ram_gb: 4")), "ram_gb"),
    "device negative peak": (lambda t: _device(t, ("peak_gflops_fp32: 166.4", "peak_gflops_fp32: -1")),
                             "peak_gflops_fp32"),
    "device unknown runtime": (lambda t: _device(t, ("runtimes: [onnxruntime, tflite]", "runtimes: [tensorrt]")),
                               "runtimes"),
    "device bad budget type": (lambda t: _device(t, ("max_model_mb: 100", "max_model_mb: lots")), "max_model_mb"),
    # CLI arguments
    "run unknown device": (lambda t: ["run", "--device", "pi-9"], "unknown device 'pi-9'"),
    "run bad nproc": (lambda t: ["run", "--nproc", "0"], "--nproc"),
    "select unknown family": (lambda t: ["select", "--device", "host", "--family", "vgg"], "--family"),
    "select bad input shape": (lambda t: ["select", "--device", "host", "--input-shape", "224,224"], "--input-shape"),
    "select unknown precision": (lambda t: ["select", "--device", "host", "--precision", "int4"], "--precision"),
    "calibrate unknown format": (lambda t: ["calibrate", "--device", "host", "--formats", "coreml"], "--formats"),
    "bench wrong suffix": (lambda t: ["bench", _file(t, "model.pt", b"x")], "model suffix"),
    "bench missing model": (lambda t: ["bench", str(t / "none.onnx")], "file not found"),
    "devices show unknown": (lambda t: ["devices", "show", "jetson-nono"], "did you mean 'jetson-nano'"),
    "report not a run": (lambda t: ["report", str(t)], "not a run folder"),
    "export of a sentence-encoder run": (lambda t: ["export", _encoder_run(t)], "a sentence-encoder run"),
    # passwords: refused, and shown masked (the test below checks the password never appears)
    "pipeline target with a password": (lambda t: _pipeline(t, bench={"target": f"ssh://pi:{PASSWORD}@pi.local"}),
                                        "'ssh://pi:***@pi.local' holds a password"),
    "device address with a password": (lambda t: _device(t, ("connection: {transport: local}", "connection: "
                                                             f"{{transport: ssh, address: 'ssh://pi:{PASSWORD}@pi'}}")),
                                       "'ssh://pi:***@pi' holds a password"),
    "bench target with a password": (lambda t: ["bench", _file(t, "m.onnx", b"x"), "--target",
                                                f"ssh://root:{PASSWORD}@10.0.0.7:2222"], "holds a password"),
    # files that are not what they claim
    "onnx that is not one": (lambda t: ["bench", _file(t, "fake.onnx", b"not a protobuf at all"), "--device", "host"],
                             "fake.onnx"),
    "tflite that is not one": (lambda t: ["bench", _file(t, "fake.tflite", b"\x00" * 64), "--device", "host"],
                               "fake.tflite"),
    "onnx with a bool input": (lambda t: ["bench", _bool_input_onnx(t), "--device", "host"],
                               "input 'mask' has dtype bool"),
    "tflite with a bool input": (lambda t: ["bench", _bool_input_tflite(t), "--device", "host"], "has dtype bool"),
    "npz with mismatched shapes": (lambda t: ["run", "--out", str(t / "run"), write_pipeline(
        t / "p.yaml", tiny_pipeline_dict(data={
            "kind": "npz", "path": _npz(t, x=np.zeros((10, 8, 8), np.float32), y=np.zeros(7, np.int64))}))],
        "data.npz"),
    "validate npz with mismatched shapes": (lambda t: _pipeline(t, data={
        "kind": "npz", "path": _npz(t, x=np.zeros((10, 8, 8), np.float32), y=np.zeros(7, np.int64))}),
        "y has shape (7,); expected (10,)"),
    "npz holding pickled objects": (lambda t: ["run", "--out", str(t / "run"), write_pipeline(
        t / "p.yaml", tiny_pipeline_dict(data={
            "kind": "npz", "path": _npz(t, x=np.array([RunsCode()], dtype=object), y=np.zeros(1, np.int64))}))],
        "data.npz"),
    "bench data npz mismatched": (lambda t: ["bench", _file(t, "fake.onnx", b"x"), "--data",
                                             _npz(t, x=np.zeros((3, 1, 8, 8), np.float32), y=np.zeros(2))],
                                  "x has 3 rows and y 2"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    make, expected = CASES[case]
    args = make(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-1500:])
    assert "Traceback" not in proc.stderr
    # Our errors are `error: ...`, one line per problem; argument errors caught by the CLI parser are click's
    # `Error: ...` line.
    lines = [line for line in proc.stderr.splitlines() if line.lower().startswith("error:")]
    assert lines and any(expected in line for line in lines), proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    # Nothing the user had is lost or changed.
    assert all(p.is_file() and p.read_bytes() == data for p, data in before.items())


def test_corpus_is_at_least_30():
    assert len(CASES) >= 30


def test_pickled_checkpoint_with_code_is_refused_before_training(tmp_path):
    checkpoint = tmp_path / "teacher.pt"
    with open(checkpoint, "wb") as fh:
        pickle.dump({"weight": RunsCode()}, fh)
    spec = {**tiny_pipeline_dict(), "teacher": {"kind": "checkpoint", "family": "resnet", "width": 0.25,
                                                "depth": 0.5, "path": str(checkpoint)}}
    path = write_pipeline(tmp_path / "p.yaml", spec)
    proc = cli("run", path, "--out", tmp_path / "run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "teacher.pt" in proc.stderr and "never unpickles code" in proc.stderr
    assert (tmp_path / "run" / "manifest.json").is_file()  # the run folder and its record survive


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                       max_leaves=6)
_sections = ("name", "seed", "device", "budgets", "data", "teacher", "student", "distill", "export", "bench",
             "report")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=st.sampled_from(_sections), key=st.one_of(st.none(), st.text(max_size=10)), value=_values)
def test_fuzzed_pipeline_is_valid_or_one_user_error(tmp_path, section, key, value):
    spec = tiny_pipeline_dict()
    if key is None or not isinstance(spec.get(section), dict):
        spec[section] = value
    else:
        spec[section] = {**spec[section], key: value}
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    try:
        load_pipeline(path)
    except UserError as exc:
        assert all(str(path) in line for line in str(exc).split("\n"))


def test_every_problem_of_a_pipeline_is_shown_one_line_each(tmp_path):
    spec = tiny_pipeline_dict(seed=-1, teacher={"epochs": 0, "famly": "resnet"}, distill={"temprature": 3})
    path = write_pipeline(tmp_path / "p.yaml", spec)
    proc = cli("validate", path, cwd=tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 4, proc.stderr
    assert all(line.startswith(f"error: {path}:") for line in lines)
    for field in ("seed", "teacher.epochs", "teacher.famly", "distill.temprature"):
        assert any(f": {field}: " in line for line in lines), field


def test_a_folder_as_data_path_is_called_a_folder(tmp_path):
    (tmp_path / "images").mkdir()
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(data={"kind": "npz", "path": "images"}))
    proc = cli("validate", path, cwd=tmp_path)
    assert proc.returncode == 2 and "is a folder; expected a file" in proc.stderr


def test_piped_run_output_is_not_cut_at_80_columns():
    import io

    from edgedistill.terminal import SafeConsole

    out = io.StringIO()
    SafeConsole(file=out).print("x" * 150 + " end")
    assert out.getvalue() == "x" * 150 + " end\n"
