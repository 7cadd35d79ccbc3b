"""The one exception type for problems the user can fix (bad input, missing files).

The CLI turns an :class:`SviError` into a single ``error: ...`` line on stderr and
exit code 2; library callers catch it like any other exception.
"""

from __future__ import annotations


class SviError(Exception):
    """A user-facing error with a one-line, actionable message."""
