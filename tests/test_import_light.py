"""`import edgedistill` and the CLI's --help load no heavy runtime."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import cli

HEAVY = ("torch", "onnxruntime", "onnx", "ai_edge_litert", "litert_torch", "tensorflow", "transformers", "sklearn")


def test_import_and_cli_module_are_light():
    code = ("import sys, edgedistill, edgedistill.cli.main, edgedistill.config.pipeline; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_and_version():
    proc = cli("--help")
    assert proc.returncode == 0 and "run" in proc.stdout and "devices" in proc.stdout
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("edgedistill ")
