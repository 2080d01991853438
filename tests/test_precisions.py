"""The precision table is what every place reads: names, bytes per weight, parity rule, gate steps."""

from __future__ import annotations

import pytest

from edgedistill.config.pipeline import Parity
from edgedistill.cost import ModelCost
from edgedistill.export.formats import PRECISIONS as FORMAT_PRECISIONS
from edgedistill.latency.select import storage_bytes_per_value
from edgedistill.precisions import PRECISIONS, QUANTIZED, TABLE, get_precision
from tests.conftest import cli


def test_the_table_names_every_precision_once():
    assert PRECISIONS == FORMAT_PRECISIONS == tuple(TABLE) and "fp32" not in QUANTIZED
    assert [p for p in PRECISIONS if TABLE[p].needs_calibration] == ["int8"]
    with pytest.raises(KeyError, match="valid: fp32, fp16, int8-weights, int8-dynamic, int8"):
        get_precision("int4")


@pytest.mark.parametrize("precision,bytes_", [("fp32", 4), ("fp16", 2), ("int8-weights", 1), ("int8-dynamic", 1),
                                              ("int8", 1)])
def test_the_cost_model_and_selection_count_the_table_s_bytes(precision, bytes_):
    assert ModelCost(params=1000).weight_bytes(precision) == 1000 * bytes_
    assert storage_bytes_per_value(precision) == bytes_


def test_parity_judges_each_precision_by_its_rule():
    parity = Parity()
    assert parity.problem("fp32", 1.0, 1.0, 1.0) is not None  # exact: an absolute tolerance
    assert parity.problem("fp16", 1e-3, 1.0, 10.0) is None and parity.problem("fp16", 5.0, 1.0, 10.0) is not None
    for p in ("int8-weights", "int8-dynamic", "int8"):  # agreement: outputs move by design
        assert parity.problem(p, 5.0, 0.95, 1.0) is None and "top-1 agreement" in parity.problem(p, 0.0, 0.5, 1.0)


def test_the_quantize_command_offers_every_quantized_precision(tmp_path):
    proc = cli("quantize", "--help")
    assert all(p in proc.stdout for p in QUANTIZED)
    (tmp_path / "model.onnx").write_bytes(b"x")
    proc = cli("quantize", tmp_path / "model.onnx", "--precision", "int4")
    assert proc.returncode == 2 and "valid: " + ", ".join(sorted(QUANTIZED)) in proc.stderr
