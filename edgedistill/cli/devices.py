"""`edgedistill devices list|show`: the device profiles and their budgets."""

from __future__ import annotations

import typer

from edgedistill.cli.common import user_errors

app = typer.Typer(no_args_is_help=True, help="List and show device profiles.")


@app.command("list")
@user_errors
def list_devices() -> None:
    """A table of every known device profile."""
    from rich.console import Console
    from rich.table import Table

    from edgedistill.config.device import device_files, load_device

    table = Table(title="device profiles")
    for column in ("name", "processor / accelerator", "cores", "fp32 GFLOPS", "RAM MB", "runtimes", "default",
                   "size MB", "RAM MB budget", "p90 ms", "acc. drop"):
        table.add_column(column, overflow="fold")
    for name in device_files():
        d = load_device(name)
        b = d.budgets
        table.add_row(name, d.hardware.accelerator or d.hardware.processor, str(d.hardware.cores),
                      f"{d.hardware.peak_gflops_fp32:g}", str(d.hardware.ram_mb), ", ".join(d.runtimes),
                      f"{d.default_format} {d.default_precision}", *(
                          "—" if v is None else f"{v:g}" for v in
                          (b.max_model_mb, b.max_ram_mb, b.max_latency_p90_ms, b.max_accuracy_drop)))
    Console().print(table)


@app.command("show")
@user_errors
def show_device(name: str = typer.Argument(..., help="A profile name (see `devices list`) or a YAML file.")) -> None:
    """One profile: its file, with the sources of its figures, and the values read at load time."""
    from pathlib import Path

    from rich.console import Console
    from rich.syntax import Syntax

    from edgedistill.config.device import device_files, load_device

    profile = load_device(name)
    path = Path(name) if Path(name).suffix in (".yaml", ".yml") else device_files()[name]
    console = Console()
    console.print(f"[bold]{profile.name}[/bold] — {profile.description}\n[dim]{path}[/dim]")
    console.print(Syntax(path.read_text(), "yaml", theme="ansi_dark", background_color="default"))
    hw = profile.hardware
    console.print(f"resolved: processor {hw.processor!r}, {hw.cores} cores, {hw.ram_mb} MB RAM")
