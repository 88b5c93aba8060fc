"""Text from untrusted data, made safe to print: bounded ``repr`` and escaped control characters.

Every message built from input (an archive member's name, a label value, a config value) goes
through these, so that a crafted value can neither blow a message up to gigabytes (shared
references, YAML aliases) nor forge log lines and terminal output (newlines, escape codes).
"""

from __future__ import annotations

import reprlib
from typing import Any

MAX_MESSAGE = 2000  # characters of one error message or log line built from data

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlong = 40
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = 5
_REPR.maxdeque = _REPR.maxarray = 5


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr`` that never expands: nesting, container lengths and strings are truncated.

    Never raises (a huge int, whose ``repr`` Python refuses, becomes ``<int of N bits>``) and never
    returns control characters or more than ``limit`` characters.
    """
    try:
        text = _REPR.repr(value)
    except Exception:  # int too large for str(), a broken __repr__, ...
        if isinstance(value, int):
            text = f"<int of {value.bit_length()} bits>"
        else:
            text = f"<{type(value).__name__}>"
    return printable(text, limit)


def printable(text: Any, limit: int | None = MAX_MESSAGE) -> str:
    """``text`` with control and other non-printable characters escaped, cut to ``limit`` characters.

    Newlines, tabs, ESC (terminal codes), bidi overrides and the like become ``\\n``, ``\\x1b``,
    ``\\u202e``...; so a name from an archive cannot start a new log line or recolour a terminal.
    """
    text = str(text)
    if limit is not None and len(text) > 4 * limit:  # escaping is linear, but don't walk megabytes
        text = text[: 4 * limit]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


def _escape(c: str) -> str:
    code = ord(c)
    if c == "\n":
        return "\\n"
    if c == "\t":
        return "\\t"
    if c == "\r":
        return "\\r"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def one_line(text: Any, limit: int = MAX_MESSAGE) -> str:
    """Whitespace runs (newlines included) collapsed to one space, then :func:`printable`."""
    return printable(" ".join(str(text).split()), limit)
