"""Distillation: losses, the training loop, evaluation."""
