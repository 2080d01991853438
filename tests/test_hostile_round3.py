"""Hostile inputs, round 3: teachers that are programs, folders that are links, stale results and inputs that
declare more than they hold. Each case is a real file of the kind a probe used; none runs code or writes outside
its folder."""

from __future__ import annotations

import builtins
import gzip
import io
import json
import time
import zipfile
from pathlib import Path

import pytest
import torch

from edgedistill.errors import UserError
from edgedistill.models.teachers import load_foreign
from tests.conftest import cli


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


class _MapsAFile(torch.nn.Module):
    """A TorchScript forward pass that maps a file shared and writes into it (the probe's teacher)."""

    def __init__(self, victim: str):
        super().__init__()
        self.victim = victim

    def forward(self, x):
        mapped = torch.from_file(self.victim, True, 4, dtype=torch.uint8)
        return x + mapped.fill_(65).float().sum() * 0


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').close()",)


def test_a_pt2_with_a_pickled_weight_is_refused_before_anything_runs(tmp_path):
    program = torch.export.export(_Linear().eval(), (torch.zeros(1, 4),))
    good = tmp_path / "good.pt2"
    torch.export.save(program, good)
    assert load_foreign("exported", good)(torch.zeros(1, 4)).shape == (1, 3)  # a plain program still loads

    marker = tmp_path / "ran"
    payload = io.BytesIO()
    torch.save(_RunsCode(str(marker)), payload)
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"].values()))
                first["use_pickle"] = True  # torch.export.load unpickles such a weight with weights_only=False
                data = json.dumps(config).encode()
                weight = first["path_name"]
            dst.writestr(info, data)
    with zipfile.ZipFile(bad) as src, zipfile.ZipFile(tmp_path / "bad2.pt2", "w") as dst:
        for info in src.infolist():
            dst.writestr(info, payload.getvalue() if info.filename.endswith(f"weights/{weight}") else src.read(info))
    with pytest.raises(UserError, match=r"holds a pickle that is not plain tensors \(it names exec\)"):
        load_foreign("exported", tmp_path / "bad2.pt2")
    assert not marker.exists()


def test_a_torchscript_teacher_that_touches_a_file_is_refused_and_the_file_kept(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    scripted = tmp_path / "maps.pt"
    torch.jit.script(_MapsAFile(str(victim))).save(str(scripted))
    with pytest.raises(UserError, match=r"calls aten::from_file"):
        load_foreign("torchscript", scripted)
    assert victim.read_bytes() == b"keep"

    from edgedistill.models import programs  # after loading (a file the source scan could not read): the graph

    with pytest.raises(UserError, match=r"its forward graph calls aten::from_file"):
        programs.check_torchscript_module(scripted, torch.jit.load(str(scripted)))
    assert victim.read_bytes() == b"keep"

    plain = tmp_path / "plain.pt"
    torch.jit.script(_Linear()).save(str(plain))
    assert load_foreign("torchscript", plain)(torch.zeros(1, 4)).shape == (1, 3)


def test_a_received_run_folder_does_not_authorize_its_own_factory(tmp_path, monkeypatch):
    from edgedistill.cli.export import _outside

    run = tmp_path / "received"
    run.mkdir()
    (run / "evil_factory.py").write_text("def build(**kw):\n    raise SystemExit('ran')\n")
    (tmp_path / "mine.py").write_text("def build(**kw):\n    return None\n")
    monkeypatch.chdir(run)  # `edgedistill export .` inside it: its module would be found first
    assert _outside(run, ("evil_factory:build", "mobilenetv2")) == ("mobilenetv2",)
    monkeypatch.chdir(tmp_path)  # the user's own module, beside the run: still authorized by the pipeline
    assert _outside(run, ("mine:build",)) == ("mine:build",)


def test_a_file_named_like_a_bundled_profile_does_not_replace_it(tmp_path, monkeypatch):
    from edgedistill.config.device import device_path
    from edgedistill.resources import bundled_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "raspberry-pi-4").write_text("name: raspberry-pi-4\nconnection: {host: attacker.example}\n")
    assert device_path("raspberry-pi-4") == bundled_dir("devices") / "raspberry-pi-4.yaml"
    (tmp_path / "my-board").write_text("name: my-board\n")
    with pytest.raises(UserError, match=r"unknown device 'my-board'.*give its path: \./my-board"):
        device_path("my-board")
    assert device_path("./my-board") == Path("./my-board")


def _fake_run(folder: Path) -> Path:
    folder.mkdir()
    for name in ("pipeline.resolved.yaml", "manifest.json"):
        (folder / name).write_text("{}")
    return folder


@pytest.mark.parametrize("linked", ["report", "distill"])
def test_a_symlinked_folder_in_a_run_is_refused_and_nothing_outside_written(tmp_path, linked):
    run = _fake_run(tmp_path / "run")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "report.md").write_text("mine")
    (run / linked).symlink_to(outside)
    proc = cli("report", run)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{run / linked}: a symbolic link in the run folder" in proc.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["report.md"] and (outside / "report.md").read_text() == "mine"
    from edgedistill.fileio import refuse_links

    with pytest.raises(UserError, match="symbolic link"):  # what run --resume checks before writing
        refuse_links(run)


def _png(path: Path, size=(8, 8)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size).save(path)
    return path


def test_class_folders_linked_out_of_the_root_are_refused_unless_asked(tmp_path):
    from edgedistill.config.pipeline import ImageFolderData
    from edgedistill.data import images

    root = tmp_path / "data"
    for i in range(2):
        _png(root / "cat" / f"{i}.png")
    _png(tmp_path / "elsewhere" / "dog" / "0.png")
    (root / "dog").symlink_to(tmp_path / "elsewhere" / "dog")
    spec = ImageFolderData(kind="imagefolder", root=root)
    with pytest.raises(UserError, match=r"dog: data.root: a symbolic link out of .*data.follow_links: true"):
        images.load(spec)
    x, y, names, _, _ = images.load(spec.model_copy(update={"follow_links": True}))
    assert names == ["cat", "dog"] and sorted(y.tolist()) == [0, 0, 1]
    (root / "cat" / "loop").symlink_to(root / "cat")  # a link inside the root: allowed, and walked once
    assert len(images.load(spec.model_copy(update={"follow_links": True}))[0]) == 3


def test_package_paths_may_not_climb_out_of_their_package():
    from edgedistill.fileio import in_package

    with pytest.raises(LookupError, match="may not climb out"):
        in_package("package:edgedistill/../../etc/passwd")


def test_a_folder_of_more_than_10000_files_is_hashed_whole(tmp_path, monkeypatch):
    from edgedistill.pipeline.inputs import files_digest

    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(10_050):
        (folder / f"{i:05d}.txt").write_bytes(b"x")
    before = files_digest([folder])
    (folder / "10049.txt").write_bytes(b"y")  # sorted last: past the first 10,000
    assert files_digest([folder]) != before


def test_resume_without_out_never_takes_over_a_run_for_another_device(tmp_path, monkeypatch):
    from edgedistill.cli.run import _run_dir

    monkeypatch.chdir(tmp_path)
    for stamp, device in (("20260101-000000", "host"), ("20260102-000000", "raspberry-pi-5")):
        run = tmp_path / "runs" / "p" / stamp
        run.mkdir(parents=True)
        (run / "manifest.json").write_text("{}")
        (run / "device.resolved.yaml").write_text(f"name: {device}\n")
    assert _run_dir("p", None, True, "host").name == "20260101-000000"  # the latest for this device
    assert _run_dir("p", None, True, "raspberry-pi-5").name == "20260102-000000"
    with pytest.raises(UserError, match=r"was made for device 'raspberry-pi-5', not 'raspberry-pi-4'"):
        _run_dir("p", None, True, "raspberry-pi-4")


def test_a_thin_strip_image_is_refused_before_it_is_resized(tmp_path):
    from edgedistill.data.images import Preprocess

    strip = _png(tmp_path / "strip.png", size=(2_000_000, 1))
    assert strip.stat().st_size < 100_000  # small on disk
    with pytest.raises(UserError, match=r"2000000x1 pixels would be .* after resizing"):
        Preprocess(224, 224, "rgb", (1 / 255,) * 3, (0.0,) * 3).load(strip)


def test_a_batch_too_large_to_decode_is_one_line(tmp_path):
    from edgedistill.data.images import ImageArray, Preprocess

    paths = [_png(tmp_path / f"{i}.png") for i in range(40)]
    array = ImageArray(paths, Preprocess(4096, 4096, "rgb", (1 / 255,) * 3, (0.0,) * 3))
    with pytest.raises(UserError, match=r"40 images of 3x4096x4096 float32 are 7.5 GiB at once"):
        array[:]


def test_a_backtracking_label_pattern_stops_with_one_line(tmp_path):
    from edgedistill.data.images import by_file_name

    _png(tmp_path / ("a" * 60 + ".png"))
    start = time.monotonic()
    with pytest.raises(UserError, match=r"took over 1.0 s on this file name"):
        by_file_name(tmp_path, r"(a+)+b(\d)", "*")
    assert time.monotonic() - start < 10


def test_a_file_name_holding_a_huge_class_is_refused(tmp_path):
    from edgedistill.data.images import by_file_name

    _png(tmp_path / "x_1000000000.png")
    with pytest.raises(UserError, match=r"class 1000000000 in the file name; expected class indices below 100,000"):
        by_file_name(tmp_path, r"_(\d+)\.png$", "*")


def test_an_idx_bomb_is_refused_before_it_is_inflated(tmp_path):
    from edgedistill.data.idx import read_idx

    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (255, 4096, 4096))
    bomb = tmp_path / "bomb.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(header + bytes(1 << 20))
    with pytest.raises(UserError, match=r"bytes of pixels; at most"):
        read_idx(bomb, 3, "images")


def test_mean_and_std_read_back_from_the_resolved_pipeline(tmp_path):
    import yaml

    from edgedistill.config.pipeline import load_pipeline
    from tests.conftest import tiny_pipeline_dict, write_pipeline

    for i in range(12):
        _png(tmp_path / "data" / ("a" if i % 2 else "b") / f"{i}.png")
    raw = tiny_pipeline_dict(data={"kind": "imagefolder", "root": str(tmp_path / "data"),
                                   "preprocess": {"resize": 8, "channels": "gray", "mean": [0.5], "std": [0.25]}})
    spec = load_pipeline(write_pipeline(tmp_path / "p.yaml", raw))
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(yaml.safe_dump(spec.model_dump(mode="json")))  # as write_resolved writes it
    again = load_pipeline(resolved)
    assert again.data.preprocess.mean == [0.5] and again.data.preprocess.std == [0.25]



def _vit_folder(folder: Path, **sizes) -> Path:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=3)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    if sizes:
        raw = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**raw, **sizes}))
    return folder


def test_a_hugging_face_folder_with_absurd_sizes_or_a_pickled_weight_is_one_line(tmp_path):
    huge = _vit_folder(tmp_path / "huge", hidden_size=10**9)
    with pytest.raises(UserError, match=r"config.json: hidden_size: 1,000,000,000; expected 0..65,536"):
        load_foreign("huggingface", huge)
    pickled = _vit_folder(tmp_path / "pickled")
    for weights in pickled.glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "ran"
    torch.save(_RunsCode(str(marker)), pickled / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"pickled: teacher.path: not a Hugging Face image classifier folder"):
        load_foreign("huggingface", pickled)
    assert not marker.exists()


def test_an_npy_header_too_large_is_one_line_without_advice_to_unpickle(tmp_path):
    from edgedistill.data.npz import check_npz

    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }" + " " * 20_000
    header += " " * (63 - (len(header) + 12) % 64) + "\n"
    array = b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header.encode() + bytes(4)
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as archive:
        archive.writestr("x.npy", array)
        archive.writestr("y.npy", array)
    with pytest.raises(UserError, match=r"array 'x' has a .npy header over 10,000 bytes") as caught:
        check_npz(tmp_path / "big.npz", ("x", "y"))
    assert "allow_pickle" not in str(caught.value)


def test_a_superscript_digit_in_a_file_name_is_one_line(tmp_path):
    from edgedistill.data.images import by_file_name

    _png(tmp_path / "x_\u00b2.png")
    with pytest.raises(UserError, match=r"finds no class index in the file name"):
        by_file_name(tmp_path, r"_(\w+)\.png$", "*")


def test_a_cache_entry_truncated_while_a_stage_holds_it_does_not_kill_the_process(tmp_path):
    """The probe truncated an entry's logits while the distill stage had it memory-mapped: SIGBUS, and the
    manifest left at `running`. Entries that fit in memory are read into it; this one is truncated after the
    lookup and read afterwards, in a child process so that a crash would show as its exit code."""
    import subprocess
    import sys

    script = (
        "import os, sys, numpy as np\n"
        "from pathlib import Path\n"
        "from edgedistill.distill.cache import TeacherOutputs, lookup, store\n"
        "root = Path(sys.argv[1])\n"
        "store('k', TeacherOutputs(np.ones((4096, 64), np.float32), {}, {}), root)\n"
        "entry = lookup('k', root)\n"
        "os.truncate(root / 'teacher' / 'k' / 'logits.npy', 0)\n"
        "print(float(np.asarray(entry.logits).sum()))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(4096.0 * 64)


def test_bench_on_emulated_arm_with_a_non_model_or_5d_data_is_one_line(tmp_path):
    import numpy as np

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(bytes(range(256)) * 4)
    np.savez(tmp_path / "d4.npz", x=np.zeros((2, 1, 8, 8), np.float32), y=np.zeros(2, np.int64))
    np.savez(tmp_path / "d5.npz", x=np.zeros((2, 1, 1, 8, 8), np.float32), y=np.zeros(2, np.int64))
    for data, expected in (("d4.npz", "junk.onnx: MODEL: this host's onnxruntime cannot run it"),
                           ("d5.npz", "d5.npz: --data: x has shape (2, 1, 1, 8, 8)")):
        proc = cli("bench", junk, "--device", "raspberry-pi-4", "--target", "emulated", "--data", tmp_path / data)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and expected in proc.stderr, proc.stderr


def test_bench_data_says_when_a_folder_holds_the_training_images(tmp_path):
    from edgedistill.data.images import holds_training_images, trained_on

    drawn = tmp_path / "drawn"  # no test split of its own: the test images were drawn from the root
    (drawn / "cat").mkdir(parents=True)
    marks = trained_on(drawn)
    assert holds_training_images(drawn, marks) and holds_training_images(drawn / "cat", marks)
    given = tmp_path / "given"
    for split in ("train", "test"):
        (given / split).mkdir(parents=True)
    marks = trained_on(given)
    assert holds_training_images(given / "train", marks) and holds_training_images(given, marks)
    assert not holds_training_images(given / "test", marks) and not holds_training_images(tmp_path / "other", marks)
    assert "folder_id" in marks and str(given) not in json.dumps(marks)  # the path itself does not travel


def test_select_without_a_pipeline_says_whose_data_it_plans_for():
    proc = cli("select", "--device", "raspberry-pi-4", "--json")
    assert "planning for the bundled quickstart.yaml's data and teacher; give --pipeline" in proc.stderr
    assert json.loads(proc.stdout)["device"] == "raspberry-pi-4"  # stdout stays JSON


@pytest.mark.parametrize("span", [(0.21, 0.3), (0.004, 30.0)])
def test_log_axis_labels_are_few_and_plain(span):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgedistill.report.figures import _log_x

    fig, ax = plt.subplots(figsize=(6, 2))
    ax.plot(span, [0, 1])
    _log_x(ax, "latency (ms, log scale)")
    fig.canvas.draw()
    major = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert not [t for t in ax.get_xticklabels(minor=True) if t.get_text()]  # minor labels were the overlap
    assert 3 <= len(major) <= 10 and all("$" not in t for t in major), major
    plt.close(fig)


def test_a_truncated_pt2_is_one_line_without_torch_s_log(tmp_path, capfd):
    program = torch.export.export(_Linear().eval(), (torch.zeros(1, 4),))
    torch.export.save(program, tmp_path / "whole.pt2")
    data = (tmp_path / "whole.pt2").read_bytes()
    (tmp_path / "cut.pt2").write_bytes(data[: len(data) // 2])
    capfd.readouterr()
    with pytest.raises(UserError, match=r"cut.pt2: teacher.path: not a zip archive"):
        load_foreign("exported", tmp_path / "cut.pt2")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_device_s_answer_reaches_the_terminal_escaped(capsys):
    from edgedistill.cli.bench import _say

    _say("m.onnx on ssh://pi@box, CPU \x1b]0;owned\x07Cortex-A72\x1b[2J: p50 1.0 ms")
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b]0;owned\\x07Cortex-A72" in out
