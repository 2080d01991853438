"""Errors the user can fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user (a file, a field, an argument). Printed as one line per problem (the message's
    lines), exit code 2."""


class StageFailed(Exception):
    """A pipeline stage failed; the run directory keeps everything finished before it."""


def nearest(value: object, choices: Iterable[str]) -> str | None:
    """The closest valid choice to `value`, or None when nothing is close."""
    matches = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_choice(what: str, value: object, choices: Iterable[str]) -> str:
    """One-line message for a value outside a known set, with the nearest match and all valid ones."""
    choices = sorted(str(c) for c in choices)
    hint = nearest(value, choices)
    guess = f"; did you mean '{hint}'?" if hint else ""
    return f"unknown {what} {value!r}{guess} (valid: {', '.join(choices)})"
