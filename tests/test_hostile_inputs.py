"""Resource bombs and odd files (issue: hardening round 2): each refused with one line and exit 2, quickly,
before anything large is built or read. Real files, real FIFOs and devices, the real CLI."""

from __future__ import annotations

import io
import os
import time
import zipfile

import numpy as np
import pytest

from edgedistill.errors import UserError
from tests.conftest import cli, tiny_pipeline_dict, write_pipeline

BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def _one_line_refusal(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-800:])
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr[-800:]
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.mark.parametrize("name, text, needle", [
    ("laughs.yaml", BILLION_LAUGHS, "expands to more than 100,000 values"),
    ("deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper"),
    ("deep50.yaml", "a: " + "[" * 60 + "]" * 60 + "\n", "nested more than 50 levels"),
    ("self.yaml", "a: &a [1, *a]\n", "an alias refers to the node that holds it"),
    ("huge.yaml", "# " + "x" * (1 << 20) + "\n", "larger than 1024 kB"),
])
def test_yaml_bombs_are_refused_before_they_are_built(tmp_path, name, text, needle):
    (tmp_path / name).write_text(text)
    start = time.perf_counter()
    proc = cli("validate", tmp_path / name, cwd=tmp_path)
    _one_line_refusal(proc, needle)
    assert time.perf_counter() - start < 30  # was 92 s and 2.5 GB for the billion laughs


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_files_that_are_not_regular_are_never_read(tmp_path, kind):
    path = {"device": "/dev/zero", "folder": str(tmp_path)}.get(kind, str(tmp_path / "pipe.yaml"))
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block forever
    proc = cli("validate", path, cwd=tmp_path, timeout=60)
    _one_line_refusal(proc, "not a regular file")


def _npz_pipeline(tmp_path, npz, **data):
    return write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(data={"kind": "npz", "path": str(npz), **data}))


def test_an_npz_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (1_000_000, 3, 1000, 1000)})
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as archive:
        archive.writestr("x.npy", header.getvalue() + b"\0" * 100)  # declares 12 TB, holds 100 bytes
        labels = io.BytesIO()
        np.save(labels, np.zeros(10, np.int64))
        archive.writestr("y.npy", labels.getvalue())
    _one_line_refusal(cli("validate", _npz_pipeline(tmp_path, tmp_path / "d.npz"), cwd=tmp_path),
                      "declares (1000000, 3, 1000, 1000)", "the file is corrupt")


def test_an_npz_larger_than_free_memory_is_refused_before_reading(tmp_path):
    """The arrays' inflated size is checked against free memory first; here 'free memory' is scaled down so a
    small real file stands in for a 4 GiB zip bomb."""
    from edgedistill.data.npz import check_npz

    np.savez_compressed(tmp_path / "d.npz", x=np.zeros((1000, 1, 64, 64), np.float32), y=np.zeros(1000, np.int64))
    check_npz(tmp_path / "d.npz", ("x", "y"))  # fits this machine
    with pytest.raises(UserError, match=r"as float32, more than half of the .* GiB of memory free"):
        check_npz(tmp_path / "d.npz", ("x", "y"), free_fraction=1e-6)


@pytest.mark.parametrize("arrays, extra, needle", [
    ({"x": np.zeros((20, 8, 8)), "y": np.array([0] * 19 + [10**9])}, {}, "holds the label 1000000000"),
    ({"x": np.zeros((20, 8, 8)), "y": np.array([0] * 10 + [1] * 9 + [2])}, {"class_names": ["a", "b"]},
     "expected class indices 0..1"),
    ({"x": np.zeros((0, 8, 8)), "y": np.zeros(0, np.int64)}, {}, "x holds no samples"),
    ({"x": np.zeros((10, 8, 8)), "y": np.arange(10)}, {}, "a stratified train/val/test split"),
    ({"x": np.zeros((4, 1, 1, 100_000), np.uint8), "y": np.arange(4)}, {}, "4096 pixels a side"),
])
def test_npz_contents_out_of_bounds_are_one_line(tmp_path, arrays, extra, needle):
    np.savez(tmp_path / "d.npz", **arrays)
    _one_line_refusal(cli("validate", _npz_pipeline(tmp_path, tmp_path / "d.npz", **extra), cwd=tmp_path), needle)


def test_a_seed_numpy_cannot_take_is_one_line(tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(seed=2**32))
    _one_line_refusal(cli("validate", path, cwd=tmp_path), "seed")
    _one_line_refusal(cli("run", path, "--seed", str(2**40), "--out", tmp_path / "run", cwd=tmp_path), "seed")


def test_select_refuses_an_input_that_would_not_fit_in_memory(tmp_path):
    start = time.perf_counter()
    _one_line_refusal(cli("select", "--device", "raspberry-pi-4", "--input-shape", "3,100000,100000", cwd=tmp_path),
                      "H, W in 8..4096")
    assert time.perf_counter() - start < 30  # it once allocated 120 GB
