"""Number formatting shared by the Markdown and HTML reports."""

from __future__ import annotations


def pct(value) -> str:
    """0.9694 -> '96.94%'; None -> '—'."""
    return "—" if value is None else f"{value * 100:.2f}%"


def ms(value) -> str:
    return "—" if value is None else f"{value:.3f}"
