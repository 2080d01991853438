"""Number formatting shared by the Markdown and HTML reports."""

from __future__ import annotations


def pct(value) -> str:
    """0.9694 -> '96.94%'; None -> '—'."""
    return "—" if value is None else f"{value * 100:.2f}%"


def ms(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def selection_summary(sel: dict) -> str:
    """One sentence: which candidate was chosen on which device, predicted against measured latency."""
    chosen = sel["chosen"]
    text = (f"size: auto chose {chosen['label']} ({chosen['params']:,} params) of {len(sel['candidates'])} candidates "
            f"for {sel['device']} ({sel['format']} {sel['precision']}): predicted p90 {chosen['p90_ms']:.3g} ms")
    if sel.get("measured_p90_ms") is not None:
        text += f", measured {sel['measured_p90_ms']:.3g} ms ({sel['prediction_error']:+.0%} off)"
    return text + "."
