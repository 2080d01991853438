"""What reaches the user's terminal: control characters from names, profiles, paths or a device's answers
are shown escaped (`\\x1b`), so no string from a file can move the cursor, retitle the window or hide text."""

from __future__ import annotations

import re

from rich.console import Console

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_NEWLINE = re.compile(_CONTROL.pattern[:-1] + r"\n\t]")


def terminal_safe(text: str, one_line: bool = False) -> str:
    """`text` with control and bidirectional-override characters escaped; newlines and tabs too if `one_line`."""
    pattern = _CONTROL_OR_NEWLINE if one_line else _CONTROL
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class SafeConsole(Console):
    """A rich Console that escapes control characters in every string it is asked to print, and prints a line
    whose markup a name broke (a pipeline called '[/]') as plain text rather than failing."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_terminal and "width" not in kwargs:
            self.soft_wrap = True  # a log file or a pipe: one line per message, never cut at 80 columns

    def render_str(self, text: str, **kwargs):
        from rich.errors import MarkupError

        try:
            return super().render_str(terminal_safe(text), **kwargs)
        except MarkupError:
            return super().render_str(terminal_safe(text), **{**kwargs, "markup": False})
