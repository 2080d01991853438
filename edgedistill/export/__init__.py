"""Export: the format table, converters, metadata and parity checks."""
