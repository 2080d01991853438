"""Pydantic models for pipelines and device profiles, and YAML loading with one-line errors."""
