"""edgedistill/README.md, the code map, names files and registries: they exist (a guide that lies is worse than
none)."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgedistill"


def test_every_file_and_folder_the_code_map_names_exists():
    text = (PACKAGE / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([a-z_/]+(?:\.py|/))(?::\w+)?`", text))
    assert len(named) > 20
    missing = sorted(n for n in named if not ((PACKAGE / n).exists() or (PACKAGE.parent / n).exists()
                                              or any(PACKAGE.glob(f"*/{n}"))))
    assert missing == []


def test_the_registries_it_names_are_there():
    from edgedistill.bench.targets import TARGETS, register_target
    from edgedistill.config.pipeline import PIPELINE_KINDS
    from edgedistill.distill.terms import TERMS
    from edgedistill.distill.trainer import ClassifierTask, TrainingTask
    from edgedistill.export.formats import FORMATS
    from edgedistill.lm.causal import CausalTask
    from edgedistill.lm.distill import EncoderTask
    from edgedistill.lm.terms import CAUSAL_TERMS, ENCODER_TERMS
    from edgedistill.models.teachers import FOREIGN
    from edgedistill.precisions import TABLE

    assert callable(register_target) and {"local", "ssh", "emulated"} <= set(TARGETS)
    assert {"onnx", "tflite"} <= set(FORMATS) and "fp32" in TABLE and "dkd" in TERMS
    assert {"text", "instructions"} <= set(PIPELINE_KINDS) and "torchscript" in FOREIGN
    assert all(issubclass(t, TrainingTask) for t in (ClassifierTask, EncoderTask, CausalTask))
    assert {"embedding", "hidden", "attention"} == set(ENCODER_TERMS) and {"ce", "kd"} == set(CAUSAL_TERMS)
