"""A training run's directory: what it holds, and how ``--out``, ``--resume`` and ``--force`` treat it.

With ``--force`` onto an existing run the new run is trained in a staging directory beside it
(:func:`staging_dir`) and swapped in by :class:`pncd.training.loop.Trainer` when it finishes, so the
old run stays whole until then. ``pncd.training.run.train`` and ``pncd.distill.run.distill`` hold the
lock of ``--out`` (:mod:`pncd.outlock`) around all of this, so one process at a time writes a run.

:func:`run_progress` tells whether a run finished its epochs; :func:`incomplete_warning` is the
line that export, eval, and distill (of a teacher run) print for one that did not.

:func:`writing` turns a write that failed because the device is full (an ``OSError`` ENOSPC, or
the ``SafetensorError`` / ``RuntimeError`` that safetensors, torch and OpenVINO raise instead)
into one line naming the file; :func:`scratch_dir` is a command's folder in the system's
temporary directory, named with its process id, that a later command removes if it was left by
a process that is gone (``kill -9``).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pncd import checkpoint as ckpt
from pncd.errors import PncdError

RUN_FILES = (ckpt.CONFIG, ckpt.BEST, ckpt.LAST, ckpt.STATE, "log.jsonl", "tensorboard")  # what a run writes

# --force: runs to be trained beside the old one (see prepare_out), taken by the Trainer.
_STAGED: dict[Path, Path] = {}


def staging_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.pncd-new"


def take_staged(out: Path) -> bool:
    """Whether ``prepare_out`` marked ``out`` to be trained beside the old run (and forget it)."""
    return _STAGED.pop(out.resolve(), None) is not None


def prepare_out(out: str | Path, resume: bool, force: bool, protect: tuple[str | Path | None, ...] = ()) -> Path:
    """Check --out before anything is loaded: an existing run needs --resume or --force; --out
    must not be (or lie under) a file, nor (with --force) one of ``protect`` (the data, a run
    this one reads), nor (with --force) a folder pncd did not write or whose run files pncd did
    not write (see :func:`pncd.io.check_owned`). With --force the old run stays untouched until
    the new one is complete."""
    from pncd.io import check_output, check_parents

    path = check_parents(out)
    if resume:
        if path.exists() and not path.is_dir():
            raise PncdError(f"--out {path} is a file, not a run directory; pass the run's directory")
        if not (path / ckpt.STATE).is_file():
            have = "no finished epoch" if (path / ckpt.CONFIG).is_file() else "no run"
            raise PncdError(f"--resume: {path} has {have} to resume from (no {ckpt.STATE}); "
                            "start it again with --force, or without --resume in a new --out")
        return path
    try:
        check_output(path, force, protect=protect, empty_ok=True, names=RUN_FILES, kind="run")
    except PncdError as e:
        if "already exists" in str(e):
            raise PncdError(f"{path} already exists; pass --resume to continue it, --force to replace it, "
                            "or another --out") from None
        raise
    if force and path.exists() and any(path.iterdir()):
        _STAGED[path.resolve()] = path
    return path


@dataclass
class RunProgress:
    """How far a run got: epochs finished (of its ``log.jsonl`` epoch rows and the epoch that
    ``last.safetensors`` records, whichever is further) against the epochs it was asked for
    (``config.json``), and the live pncd process still writing it (its lock), if any."""

    kind: str | None
    epochs_done: int | None
    epochs: int | None  # None: not recorded (a QAT run, written whole, or a foreign run)
    writer: dict[str, Any] | None = None

    @property
    def complete(self) -> bool | None:
        """True: every epoch finished; False: stopped early (killed, interrupted, diverged) or
        still training; None: unknown (no epoch count recorded)."""
        if self.epochs is None:
            return None
        return (self.epochs_done or 0) >= self.epochs and self.writer is None

    def record(self) -> dict[str, Any]:
        """The manifest's ``source`` fields: ``complete``, ``epochs_done``, ``epochs``."""
        return {"complete": self.complete, "epochs_done": self.epochs_done, "epochs": self.epochs}


def run_progress(run: str | Path, cfg: dict[str, Any] | None = None) -> RunProgress:
    """The :class:`RunProgress` of a run directory (or of the run holding a checkpoint file)."""
    from pncd.outlock import holder

    run_dir = Path(run).parent if Path(run).is_file() else Path(run)
    cfg = cfg if cfg is not None else ckpt.read_run_config(run_dir)
    kind = cfg.get("kind")
    epochs = (cfg.get("options") or {}).get("epochs") if kind in ("train", "distill") else None
    if not isinstance(epochs, int) or isinstance(epochs, bool):
        return RunProgress(kind, None, None)
    done = [_logged_epochs(run_dir / "log.jsonl"), _weights_epoch(run_dir / ckpt.LAST)]
    return RunProgress(kind, max(done), epochs, holder(run_dir))


def _logged_epochs(path: Path) -> int:
    """Epochs with a row in ``log.jsonl`` (the last epoch number + 1; 0 without any)."""
    last = -1
    try:
        with open(path) as f:
            for line in f:
                if '"type": "epoch"' in line:
                    try:
                        last = max(last, int(json.loads(line)["epoch"]))
                    except (ValueError, KeyError, TypeError):
                        continue
    except OSError:
        pass
    return last + 1


def _weights_epoch(path: Path) -> int:
    """The epochs ``last.safetensors`` was saved after (its ``epoch`` metadata + 1; 0 if unknown)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n)) if 0 < n < 100_000_000 else {}
        return int(header.get("__metadata__", {}).get("epoch")) + 1
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def incomplete_warning(run: str | Path, progress: RunProgress, doing: str) -> str | None:
    """The one-line warning for using a run that did not finish (None when it did, or unknown):
    ``doing`` is what the command does with it ("exporting", "evaluating")."""
    from pncd.outlock import describe

    if progress.complete is not False:
        return None
    at = f"epoch {progress.epochs_done} of {progress.epochs}"
    if progress.writer is not None:
        return (f"warning: {run} is still being trained by another pncd process ({describe(progress.writer)}), "
                f"{at} done; {doing} its best checkpoint so far")
    resume = f"pncd {progress.kind} --out {run} --resume"
    return (f"warning: {run} stopped at {at} (interrupted: killed, stopped or diverged); {doing} its best "
            f"checkpoint so far; finish it with {resume}")


def free_bytes(path: str | Path) -> int | None:
    """Bytes an unprivileged writer may still use on the file system of ``path`` (its nearest
    existing parent); None when the system cannot tell."""
    import os

    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


_FULL_TEXTS = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")


def disk_full(e: BaseException, paths: tuple[str | Path, ...], need: int = 0) -> Path | None:
    """Which of ``paths`` could not be written because its device is full, or None (another error).

    ENOSPC / EDQUOT, or their text in the message (safetensors), name the device outright; a
    bare stream error (torch's "unexpected pos", OpenVINO's "basic_ios::clear") counts when the
    device has less free space than ``need`` bytes (what was being written; at least 1 MiB)."""
    import errno

    if not (isinstance(e, (OSError, RuntimeError)) or type(e).__name__ == "SafetensorError") or not paths:
        return None  # not a failed write
    said = (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or any(t in str(e) for t in _FULL_TEXTS)
    for p in map(Path, paths):
        free = free_bytes(p)
        if free is not None and free < max(need, 1 << 20):
            return p
    return Path(paths[0]) if said else None


@contextlib.contextmanager
def writing(path: str | Path, *also: str | Path, need: int = 0, what: str = "--out") -> Iterator[None]:
    """Run a write into ``path`` (and scratch folders ``also``); a failure because a device is
    full becomes a RunFailed line naming the file (or the scratch folder) and saying to free
    space on the device; other errors pass unchanged."""
    from pncd.errors import RunFailed

    try:
        yield
    except PncdError:
        raise
    except Exception as e:
        where = disk_full(e, (path, *also), need)
        if where is None:
            raise
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        folder = "" if where == Path(path) else " (a temporary folder)"
        raise RunFailed(f"{where}{folder}: no space left on the device ({detail}); free space on the device "
                        f"or choose another {what}") from e


SCRATCH_STALE_S = 24 * 3600  # a scratch folder without an owner's pid counts as left behind after a day


@contextlib.contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A private folder ``pncd-<kind>-<pid>-XXXX`` in the system's temporary directory, removed at
    the end; first removes those of ``kind`` that a killed process left: its pid is gone, or (a
    name without a pid, from an older pncd) it is older than a day."""
    import os
    import shutil
    import tempfile

    remove_stale_scratch(kind)
    tmp = Path(tempfile.mkdtemp(prefix=f"pncd-{kind}-{os.getpid()}-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_scratch(kind: str, now: float | None = None) -> list[Path]:
    """Remove the scratch folders of ``kind`` left by processes that are gone; returns them."""
    import os
    import shutil
    import tempfile
    import time

    now = time.time() if now is None else now
    prefix = f"pncd-{kind}-"
    removed = []
    for p in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        head, sep, _ = p.name[len(prefix):].partition("-")
        owner = int(head) if head.isdigit() and sep else None  # pncd-<kind>-<pid>-XXXX; older names have none
        try:
            if owner == os.getpid() or not p.is_dir() or p.is_symlink() or p.stat().st_uid != os.getuid():
                continue
            stale = not _alive(owner) if owner is not None else now - p.stat().st_mtime > SCRATCH_STALE_S
        except OSError:
            continue
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
