"""The one exception type the CLI turns into a clean one-line error and a non-zero exit."""

from __future__ import annotations


class PncdError(Exception):
    """A user-facing error: the message names the file and says what to do.

    The CLI prints ``Error: <message>`` on one line and exits with status 1 (2 for usage errors).
    """
