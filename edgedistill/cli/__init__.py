"""The typer CLI: one file per command group; heavy imports stay inside the commands."""
