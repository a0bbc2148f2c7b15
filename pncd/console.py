"""Where the library's progress and warning lines go when the caller passes no ``log`` of its own:
status lines to standard output, warnings to standard error, each flushed at once (so that a log
file shows them as they happen). The command line passes its own callables where it needs to."""

from __future__ import annotations

import sys


def info(msg: str) -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)



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
