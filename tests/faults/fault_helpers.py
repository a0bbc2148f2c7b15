"""Helpers of the fault-injection suite: run, kill and inspect the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import error_line

TINY = ["--size", "32", "--batch", "4", "--steps-per-epoch", "2", "--workers", "0"]


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def one_error(p: subprocess.CompletedProcess, code: int) -> str:
    """The process failed with ``code`` and printed exactly one ``Error:`` line and no traceback."""
    assert p.returncode == code, (p.returncode, p.stderr[-3000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, p.stderr[-3000:]
    assert error_line(p) == errors[0]
    return errors[0]


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its content (to show that nothing changed)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def siblings(path: Path) -> list[str]:
    """Temporaries and staging folders of ``path`` left in its parent."""
    return sorted(p.name for p in path.parent.glob(f".{path.name}.*"))


def _sigint_as_at_a_terminal() -> None:
    """In the child, before exec: SIGINT's default action, as in a terminal where a user presses
    Ctrl-C. A test suite started as a background job (``.ci/run &``, nohup) inherits SIGINT
    *ignored* (POSIX shells do that for ``&`` without job control); Python then never raises
    KeyboardInterrupt, and the SIGINT a test sends is lost (the run finishes, exit 0)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_when(cmd_args: list[str], ready, timeout: float = 240, sig: int = signal.SIGKILL) -> int:
    """Start ``pncd cmd_args``, send it ``sig`` (SIGKILL; SIGINT: Ctrl-C) as soon as ``ready()`` is
    true; return its status."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pncd.cli", *map(str, cmd_args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_sigint_as_at_a_terminal)
    t0 = time.monotonic()
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"pncd {cmd_args[0]} ended (status {proc.returncode}) before it could be killed")
            if time.monotonic() - t0 > timeout:
                raise AssertionError("the kill point was never reached")
            time.sleep(0.05)
        proc.send_signal(sig)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
