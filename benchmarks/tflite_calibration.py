"""LiteRT full int8: activation ranges as a moving average of each sample's, or the min and max over all samples?

ai-edge-quantizer's calibrator keeps, by default, a moving average (smoothing 0.95) of each calibration sample's
minimum and maximum per tensor; edgedistill calibrates one sample at a time (the exported models take batch 1),
so a tensor's range follows the typical sample and clips the samples with the widest ones. ONNX Runtime's MinMax
calibrator takes the smallest minimum and the largest maximum over all samples. This compares the two on the
students of finished runs: each run's fp32 .tflite, quantized to full int8 both ways with the same calibration
samples (the first half of the run's validation split, as the export stage saved it), accuracy and top-1
agreement with fp32 on the other half, in LiteRT on this host.

Writes benchmarks/results/tflite_calibration.json and the table between the markers in benchmarks/README.md.
Usage: python benchmarks/tflite_calibration.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _readme import update_section

from edgedistill.config.device import host_cpu_flags
from edgedistill.export.formats import FORMATS

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "tflite_calibration.json"
VARIANTS = ("moving average (ai-edge-quantizer's default)", "min and max over all samples (edgedistill)",
            "weights only in int8", "int16 activations, moving average")


def moving_average(fp32: Path, out: Path, calibration_x: np.ndarray, activation_bits: int = 8) -> Path:
    """Full int8 weights with ai-edge-quantizer's own calibrate() (its default moving average of per-sample
    ranges), activations in 8 or 16 bits."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(fp32), recipe.static_wi8_ai8() if activation_bits == 8 else recipe.static_wi8_ai16())
    (signature, spec), = Interpreter(model_path=str(fp32)).get_signature_list().items()
    (name,) = spec["inputs"]
    ranges = qt.calibrate({signature: [{name: calibration_x[i:i + 1]} for i in range(len(calibration_x))]})
    out.write_bytes(bytes(qt.quantize(ranges).quantized_model))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    from edgedistill.quantize.tflite import quantize_tflite

    tflite = FORMATS["tflite"]
    rows = []
    for run in args.runs:
        export = run / "export"
        validation = np.load(export / "gate-validation.npz")
        x, y = validation["x"], validation["y"]
        half = len(x) // 2
        calibration_x, test_x, test_y = x[:half], x[half:], y[half:]
        fp32 = export / "student-fp32.tflite"
        out = Path(f"/tmp/edgedistill-tflite-calibration-{run.name}")
        out.mkdir(exist_ok=True)
        reference = tflite.outputs(fp32, test_x).argmax(1)
        manifest = json.loads((run / "manifest.json").read_text())
        student = manifest["stages"]["student"]["metrics"]
        row = {"run": str(run), "pipeline": manifest.get("pipeline"),
               "student": f"{student['family']} ×{student['width']:g} depth ×{student['depth']:g}",
               "input_shape": list(x.shape[1:]), "calibration_samples": half, "test_samples": len(test_x),
               "fp32_accuracy": float(np.mean(reference == test_y))}
        variants = {  # VARIANTS, in its order
                    "moving average (ai-edge-quantizer's default)": moving_average(
                        fp32, out / "ema.tflite", calibration_x),
                    "min and max over all samples (edgedistill)": quantize_tflite(
                        fp32, out / "minmax.tflite", "int8", calibration_x=calibration_x),
                    # Which part loses: the weights alone, or activations with 256 times finer steps.
                    "weights only in int8": quantize_tflite(fp32, out / "weights.tflite", "int8-weights"),
                    "int16 activations, moving average": moving_average(
                        fp32, out / "ema16.tflite", calibration_x, activation_bits=16)}
        for label, path in variants.items():
            predicted = tflite.outputs(path, test_x).argmax(1)
            row[label] = {"accuracy": float(np.mean(predicted == test_y)),
                          "agreement": float(np.mean(predicted == reference))}
        rows.append(row)
        print(json.dumps(row, indent=1))
    summary = {"benchmark": "tflite_calibration", "date": time.strftime("%Y-%m-%d"), "cpu_flags": host_cpu_flags(),
               "rows": rows}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"{summary['date']}, LiteRT on this host; calibration on the first half of each run's validation "
             "split, accuracy and agreement with the fp32 .tflite on the second half.", "",
             "Each cell: accuracy / top-1 agreement with fp32.", "",
             "| pipeline | student | input | fp32 accuracy | " + " | ".join(VARIANTS) + " |",
             "|---|---|---|---|" + "---|" * len(VARIANTS)]
    for r in rows:
        shape = "×".join(map(str, r["input_shape"]))
        cells = " | ".join(f"{r[v]['accuracy']:.2%} / {r[v]['agreement']:.2%}" for v in VARIANTS)
        lines.append(f"| {r['pipeline']} | {r['student']} | {shape} | {r['fp32_accuracy']:.2%} | {cells} |")
    update_section("tflite_calibration", "## LiteRT int8 calibration: moving average or min and max\n\n"
                   "`python benchmarks/tflite_calibration.py RUN_DIR ...`", lines)


if __name__ == "__main__":
    main()
