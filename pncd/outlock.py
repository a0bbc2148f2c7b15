"""One pncd process per output folder: an exclusive lock beside ``--out``.

``pncd train``, ``pncd distill`` and ``pncd qat`` hold :func:`out_lock` on their ``--out`` from
before they look at it until they end, ``--resume`` and ``--force`` included, so a second
process given the same ``--out`` fails at once (exit 2, one line naming the first process)
instead of writing into the same run. The lock is ``flock(2)`` on ``.NAME.pncd-lock`` in the
folder that holds ``--out``: the kernel releases it when the holder ends in any way (kill -9
included), so a lock is never stale. The file itself is removed when the holder ends normally;
one left by a killed process holds no lock and is reused by the next run.

The file records who holds it (pid, start time, command), for the refusal message and for
:func:`holder`, which tells whether a run is still being written.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

from pncd.errors import PncdError

SUFFIX = ".pncd-lock"


def lock_path(out: str | os.PathLike) -> Path:
    """The lock file of ``out``: ``.NAME.pncd-lock`` beside it (symbolic links resolved, so two
    spellings of one folder share one lock)."""
    real = Path(out).resolve()
    return real.parent / f".{real.name}{SUFFIX}"


def _read(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 65536).decode() or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def describe(info: dict[str, Any]) -> str:
    """``pid N, started YYYY-MM-DD HH:MM:SS: pncd train ...`` (what is known of a holder)."""
    parts = [f"pid {info['pid']}" if "pid" in info else "pid unknown"]
    if isinstance(info.get("started"), (int, float)):
        parts.append("started " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"])))
    text = ", ".join(parts)
    return f"{text}: {info['command']}" if info.get("command") else text


_HELD: set[int] = set()  # descriptors of the locks this process holds


def _close_in_child() -> None:
    """A forked child (a DataLoader worker) must not keep its parent's lock alive after a kill -9."""
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def _acquire(path: Path, out: str | os.PathLike, command: str) -> int:
    """Open, lock and stamp ``path``; PncdError naming the holder when another process has it."""
    for _ in range(100):  # retried only when the holder removed the file between open and lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read(fd)
            os.close(fd)
            raise PncdError(f"{out} is in use by another pncd process ({describe(info)}); wait for it to end "
                            f"or choose another --out (nothing was changed)") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            stamp = {"pid": os.getpid(), "started": time.time(), "command": command}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(stamp).encode(), 0)
            return fd
        os.close(fd)  # the file we locked was unlinked by its last holder: lock the new one
    raise PncdError(f"{out}: could not take the lock {path}; try again")


@contextlib.contextmanager
def out_lock(out: str | os.PathLike, command: str, enabled: bool = True) -> Iterator[Path]:
    """Hold the exclusive lock of ``out`` for the block (``enabled=False``: a no-op, e.g. on the
    ranks of a torchrun job other than rank 0, which write nothing). ``command`` (e.g.
    ``pncd train``) is recorded for the message a second process prints.

    Creates the folder that holds ``out`` when it is missing (removed again when the block
    leaves it empty, e.g. when the command failed)."""
    path = lock_path(out)
    try:
        made = _make_parents(path.parent) if enabled else []
    except (FileExistsError, NotADirectoryError):  # a file stands where the folder must be:
        enabled = False  # the command's own check of --out refuses it
    if not enabled:
        yield path
        return
    try:
        fd = _acquire(path, out, command)
    except BaseException:
        _remove_empty(made)
        raise
    _HELD.add(fd)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: a process that opened it retries on a new file
        _HELD.discard(fd)
        os.close(fd)
        _remove_empty(made)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first."""
    made = []
    p = folder
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return made


def _remove_empty(folders: list[Path]) -> None:
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            return


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a plain process: the one that writes a run (and locks it)."""
    return os.environ.get("RANK", "0") == "0"


def holder(out: str | os.PathLike) -> dict[str, Any] | None:
    """What the lock file of ``out`` says of a live process that holds it, or None (no lock
    file, or its process is gone). Reads only: it takes no lock."""
    try:
        info = json.loads(lock_path(out).read_text() or "{}")
    except (OSError, ValueError):
        return None
    pid = info.get("pid") if isinstance(info, dict) else None
    if not isinstance(pid, int) or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return info
