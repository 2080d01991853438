"""`edgedistill`: the entry point."""

from __future__ import annotations

import typer

from edgedistill import __version__
from edgedistill.cli import bench, devices, export, latency, report, run
from edgedistill.cli.common import state, user_errors

# rich_markup_mode=None: usage errors print as plain lines, not a boxed panel.
app = typer.Typer(name="edgedistill", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Take a large trained model to a small one that fits a named edge device, with proof.")
app.add_typer(devices.app, name="devices")
app.command("run")(user_errors(run.run_command))
app.command("validate")(user_errors(run.validate_command))
app.command("export")(user_errors(export.export_command))
app.command("quantize")(user_errors(export.quantize_command))
app.command("report")(user_errors(report.report_command))
app.command("bench")(user_errors(bench.bench_command))
app.command("calibrate")(user_errors(latency.calibrate_command))
app.command("select")(user_errors(latency.select_command))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgedistill {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors (or EDGEDISTILL_DEBUG=1)."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    state["debug"] = state["debug"] or debug


def main() -> None:
    app(prog_name="edgedistill")
