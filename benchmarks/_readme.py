"""The one place benchmark scripts write their table into benchmarks/README.md, between markers."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"


def update_section(name: str, heading: str, lines: list[str]) -> None:
    """Replace the text between `<!-- name:begin -->` and `<!-- name:end -->`; add the section if new."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    if begin not in text:
        text += f"\n{heading}\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    README.write_text(f"{head}{begin}\n" + "\n".join(lines) + f"\n{end}{rest.split(end, 1)[1]}")
