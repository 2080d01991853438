"""Latency prediction, calibration on the device, and student selection by the device budgets."""
