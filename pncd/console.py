"""Where the library's progress and warning lines go when the caller passes no ``log`` of its own:
status lines to standard output, warnings to standard error, each flushed at once (so that a log
file shows them as they happen). The command line passes its own callables where it needs to.

Progress: :func:`progress` is a tqdm bar on a terminal; when standard error is a file or a pipe
(a log, CI) it writes a plain timestamped line every few seconds instead of the bar's ``\\r``
frames, so a log holds status, not thousands of redrawn bars. :func:`heartbeat` does the same for
one long step that has no loop of its own (a quantization, an engine build).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator


def info(msg: str) -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def on_terminal() -> bool:
    """Whether standard error is an interactive terminal (progress bars go there)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def status_interval() -> float:
    """Seconds between plain status lines off a terminal (``PNCD_STATUS_SECONDS``, default 10)."""
    try:
        return max(0.1, float(os.environ.get("PNCD_STATUS_SECONDS", "10")))
    except ValueError:
        return 10.0


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


class StatusLines:
    """The part of tqdm's interface the library uses (iteration, ``update``, ``set_postfix``,
    ``close``, context manager), writing ``HH:MM:SS desc: n/total unit (rate) postfix`` to
    standard error at most every ``interval`` seconds, and a last line at the end when it wrote
    any before (a loop shorter than the interval stays silent)."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", interval: float | None = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total, self.desc, self.unit = total, desc, unit
        self.interval = status_interval() if interval is None else interval
        self.n = 0
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.wrote = False
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "StatusLines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self, now: float) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        took = now - self.start
        rate = f", {self.n / took:.2f} {self.unit}/s" if took > 0 and self.n else ""
        post = f", {self.postfix}" if self.postfix else ""
        return f"{_stamp()} {self.desc}: {self.n}{of} {self.unit} ({took:.0f}s{rate}){post}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.wrote = True
            warn(self._line(now))

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.wrote:
            warn(self._line(time.monotonic()) + " done")


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", disable: bool = False, leave: bool = False, **tqdm_kw: Any) -> Any:
    """A progress display for a loop: tqdm on a terminal, :class:`StatusLines` otherwise, and a
    pass-through (no output) with ``disable``."""
    if disable:
        return StatusLines(iterable, total=total, desc=desc, unit=unit, interval=float("inf"))
    if on_terminal():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, **tqdm_kw)
    return StatusLines(iterable, total=total, desc=desc, unit=unit)


@contextmanager
def heartbeat(what: str, interval: float | None = None) -> Iterator[None]:
    """While the block runs, a line ``HH:MM:SS still WHAT (Ns)`` every ``interval`` seconds on
    standard error (off a terminal only: there a long step's own output shows it is alive)."""
    if on_terminal():
        yield
        return
    every = status_interval() if interval is None else interval
    stop = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not stop.wait(every):
            warn(f"{_stamp()} still {what} ({time.monotonic() - start:.0f}s)")

    thread = threading.Thread(target=beat, name="pncd-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()



class _NoCudaRuntimeNote:
    """Drops torch's "No CUDA runtime is found" log record, which its C++ extension module writes
    on every import on a machine without a GPU (NNCF and torchao import it): nothing is wrong
    there. Every other record of that module passes."""

    def filter(self, record: object) -> bool:
        return not str(getattr(record, "msg", "")).startswith("No CUDA runtime is found")


def quiet_cpu_machine() -> None:
    import logging

    logger = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaRuntimeNote) for f in logger.filters):
        logger.addFilter(_NoCudaRuntimeNote())
