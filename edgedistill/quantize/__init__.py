"""Quantization of exported artifacts (ONNX Runtime, ai-edge-quantizer) and the accuracy gate."""
