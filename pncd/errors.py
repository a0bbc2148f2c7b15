"""The exception types the CLI turns into one clean line and a non-zero exit status.

Exit statuses, the same in every command (``pncd.cli.main`` applies them):

- 0: done (the gate passed, the check found no error);
- 1: the work was tried and failed: a gate rule or an accuracy/parity check failed, training
  diverged, a runtime, device or remote command failed, the operating system refused a file
  operation (permission, disk full), a needed package is missing;
- 2: bad input: a usage error, an invalid option, a file or run that is missing, unreadable,
  malformed or inconsistent with the others;
- 130: interrupted.

``PNCD_DEBUG=1`` (or ``pncd --debug``) prints the traceback as well.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class PncdError(Exception):
    """A user-facing error about the input: the message names the file and says what to do.

    The CLI prints ``Error: <message>`` on one line and exits with ``exit_code`` (2: bad input).
    """

    exit_code = EXIT_BAD_INPUT


class RunFailed(PncdError):
    """The input was usable but the work failed (diverged, a check failed, a runtime or device
    failed): exit status 1."""

    exit_code = EXIT_FAILED
