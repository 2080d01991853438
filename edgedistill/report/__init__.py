"""Deployment reports: results.json (versioned schema) and report.md, built from a run directory."""
