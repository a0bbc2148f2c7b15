"""A training run's directory: what it holds, and how ``--out``, ``--resume`` and ``--force`` treat it.

With ``--force`` onto an existing run the new run is trained in a staging directory beside it
(:func:`staging_dir`) and swapped in by :class:`pncd.trainer.Trainer` when it finishes, so the
old run stays whole until then.
"""

from __future__ import annotations

from pathlib import Path

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
        check_output(path, force, protect=protect, empty_ok=True, names=RUN_FILES)
    except PncdError as e:
        if "already exists" in str(e):
            raise PncdError(f"{path} already exists; pass --resume to continue it, --force to replace it, "
                            "or another --out") from None
        raise
    if force and path.exists() and any(path.iterdir()):
        _STAGED[path.resolve()] = path
    return path
