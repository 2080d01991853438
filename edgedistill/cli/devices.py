"""`edgedistill devices list|show|emulate`: the device profiles, their budgets, the emulated ARM target."""

from __future__ import annotations

import typer

from edgedistill.cli.common import table_console, user_errors

app = typer.Typer(no_args_is_help=True, help="List and show device profiles; set up the emulated ARM target.")


@app.command("list")
@user_errors
def list_devices() -> None:
    """A table of every known device profile and its default budgets."""
    from rich.markup import escape
    from rich.table import Table

    from edgedistill.config.device import device_files, load_device
    from edgedistill.errors import UserError

    table = Table(title="device profiles")
    for column in ("name", "compute", "cores", "fp32 GFLOPS", "RAM GB", "default", "budgets"):
        table.add_column(column, no_wrap=column in ("name", "default"))
    for name in device_files():
        try:
            d = load_device(name)
        except UserError as exc:  # a name defined twice, or a broken profile: say so in its row
            table.add_row(name, "", "", "", "", "refused", escape(str(exc)))
            continue
        hw, b = d.hardware, d.budgets
        budgets = " · ".join(text for value, text in (
            (b.max_model_mb, f"size ≤{b.max_model_mb:g} MB"), (b.max_ram_mb, f"RAM ≤{b.max_ram_mb:g} MB"),
            (b.max_latency_p90_ms, f"p90 ≤{b.max_latency_p90_ms:g} ms"),
            (b.max_accuracy_drop, f"drop ≤{(b.max_accuracy_drop or 0) * 100:g} pt")) if value is not None)
        table.add_row(name, hw.compute, str(hw.cores), f"{hw.peak_gflops_fp32:g}", f"{int(hw.ram_mb) / 1024:.1f}",
                      f"{d.default_format} {d.default_precision}", budgets)
    table_console().print(table)


@app.command("show")
@user_errors
def show_device(name: str = typer.Argument(..., help="A profile name (see `devices list`) or a YAML file.")) -> None:
    """One profile: its file, with the sources of its figures, and the values read at load time."""
    from rich.syntax import Syntax

    from edgedistill.config.device import device_path, load_device

    profile = load_device(name)
    path = device_path(name)
    console = table_console()
    console.print(f"[bold]{profile.name}[/bold] — {profile.description}\n[dim]{path}[/dim]")
    console.print(Syntax(path.read_text(), "yaml", theme="ansi_dark", background_color="default"))
    hw = profile.hardware
    console.print(f"resolved: processor {hw.processor!r}, {hw.cores} cores, {hw.ram_mb} MB RAM")


@app.command("emulate")
@user_errors
def emulate(setup: bool = typer.Option(False, "--setup", help="Build the arm64 userland now (else on first use)."),
            force: bool = typer.Option(False, "--force", help="Rebuild it even if it is there.")) -> None:
    """The emulated ARM target: whether this machine has it, where its userland is, and its CPUs."""
    from edgedistill.bench import emulated

    if setup or force:
        root = emulated.setup(force=force)
        typer.echo(f"arm64 userland ready: {root}")
    root = emulated.userland_dir()
    ready = (root / "edgedistill-userland.json").is_file()
    tools = "installed" if emulated.available() else "missing (apt-get install qemu-user-static debootstrap)"
    typer.echo(f"qemu-user and debootstrap: {tools}")
    typer.echo(f"userland: {root} ({'built' if ready else 'not built yet: edgedistill devices emulate --setup'})")
    typer.echo(f"CPUs: {', '.join(emulated.CPUS)} (bench --target emulated:CPU; a profile's hardware.arm_cpu)")
