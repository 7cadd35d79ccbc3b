"""The one exception type for problems the user can fix (bad input, missing files).

The CLI turns an :class:`SviError` into a single ``error: ...`` line on stderr and
exit code 2; library callers catch it like any other exception. :func:`one_line`
makes any message safe to print: one line, no terminal control codes.
"""

from __future__ import annotations

import re


class SviError(Exception):
    """A user-facing error with a one-line, actionable message."""


# C0 and C1 control characters, DEL, and the Unicode bidi overrides/isolates that can
# make a terminal show text other than what it holds; whitespace runs are one space.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SPACE = re.compile(r"[\t\n\r]+")


def one_line(text: object) -> str:
    """``text`` as one printable line: newlines and tabs become spaces, every other
    control character (an ESC of a colour code, a bell, a C1 byte) becomes ``\\xNN``."""
    return escape_controls(_SPACE.sub(" ", str(text)).strip())


def escape_controls(text: str) -> str:
    """``text`` with control characters other than newline and tab as ``\\xNN``."""
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
