"""Text bound for a terminal: control characters from files and runs are made visible.

A string read from a run file, a manifest or a run's stderr (a study name, a config value,
an error line, a file name) may hold ESC/OSC sequences that retitle, recolour or rewrite
the terminal of whoever prints it. Every text output of ``ist`` goes through ``printable``:
rich output through ``SafeConsole`` (rich turns every string it prints, table cells and
titles included, into text in ``render_str``; a ``Text`` built from data is made by
``safe_text``), everything else through the CLI's ``say`` and ``fail``. A control character becomes its escape (``\\x1b``), so it is still seen.
Newlines and tabs stay; JSON output is escaped by ``json.dumps`` already.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.text import Text

# C0 controls but tab and newline, DEL, C1 controls; Unicode bidi overrides and isolates
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: Any) -> str:
    """``text`` as a string with every control character replaced by its visible escape."""
    return _CONTROL.sub(_escape, str(text))


def safe_text(text: Any, **kwargs: Any) -> Text:
    """A rich ``Text`` (no markup) of ``printable(text)``: rich prints a ``Text`` as it is,
    without ``render_str``, so text built from data is made here."""
    return Text(printable(text), **kwargs)


class SafeConsole(Console):
    """A rich ``Console`` that prints every string through ``printable`` (rich's own styling,
    made of control sequences it emits itself, is unaffected), with markup off by default:
    ``[link=URL]`` in a file's string would otherwise make rich emit an OSC 8 hyperlink."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        super().__init__(*args, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)
