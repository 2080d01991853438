"""The engine: ordered stages, the run directory, the manifest and resume."""
