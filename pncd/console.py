"""Where the library's progress and warning lines go when the caller passes no ``log`` of its own:
status lines to standard output, warnings to standard error, each flushed at once (so that a log
file shows them as they happen). The command line passes its own callables where it needs to."""

from __future__ import annotations

import sys


def info(msg: str) -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
