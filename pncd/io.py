"""File helpers: atomic writes (never a half-written output) and JSON."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


OWNED_MARKER = ".pncd-owned.json"  # names pncd wrote in an output directory; --force removes only these
# What an output directory is (the marker's ``kind``): --force replaces an output only with one of the same kind
KINDS = ("run", "qat", "export", "report", "evaluation", "ablation", "dataset", "compare", "predictions", "benchmark")


def owned_names(directory: str | os.PathLike) -> set[str]:
    """The entries of ``directory`` that pncd wrote (its marker's list; empty without one)."""
    names = _marker(directory).get("names", [])
    if not isinstance(names, list):
        return set()
    return {n for n in names if isinstance(n, str) and n and "/" not in n and n not in (".", "..")}


def owned_kind(directory: str | os.PathLike) -> str | None:
    """The kind of output pncd's marker in ``directory`` records (``run``, ``export``, ...);
    None without a marker, or for a marker written before markers recorded a kind."""
    kind = _marker(directory).get("kind")
    return kind if isinstance(kind, str) and kind else None


def _marker(directory: str | os.PathLike) -> dict[str, Any]:
    try:
        data = json.loads((Path(directory) / OWNED_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_owned(directory: str | os.PathLike, names: Iterable[str], kind: str | None = None) -> None:
    """Record ``names`` as pncd's own entries of ``directory`` (the marker itself excluded), and
    what the directory is (``kind``, one of :data:`KINDS`; None keeps the kind recorded there)."""
    kind = _known(kind) or owned_kind(directory)
    names = sorted(set(names) - {OWNED_MARKER})
    write_json(Path(directory) / OWNED_MARKER, {"written_by": "pncd", "kind": kind, "names": names})


def _known(kind: str | None) -> str | None:
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}; one of {', '.join(KINDS)}")
    return kind


def is_dataset(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a data set: images/ with labels/ or masks/, or an nnU-Net raw data
    set (imagesTr/ with dataset.json); with or without pncd's marker."""
    p = Path(path)
    return ((p / "images").is_dir() and ((p / "labels").is_dir() or (p / "masks").is_dir())) or \
        ((p / "imagesTr").is_dir() and (p / "dataset.json").is_file())


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The file (or other non-directory) that stands where ``path`` or one of its parent
    directories would be, e.g. ``notes.txt`` for ``notes.txt/sub``; None when there is none."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.is_dir():
            return None
        if q.exists() or q.is_symlink():
            return q
    return None


def check_parents(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse ``path`` when a file stands where one of its parent directories must be made
    (``--out notes.txt/sub``): one line naming that file, instead of the OS's "File exists"."""
    from pncd.errors import PncdError

    path = Path(path)
    blocker = file_in_the_way(path.parent) if str(path.parent) not in ("", ".") else None
    if blocker is not None:
        raise PncdError(f"{what} {path}: {blocker} is a file, so no directory can be made inside it; "
                        f"choose another {what} (nothing was changed)")
    return path


def check_owned(path: str | os.PathLike, names: Iterable[str] = (), what: str = "--out", *, kind: str | None) -> None:
    """The one rule of what a new output of ``kind`` may replace in the existing directory
    ``path`` (--force, a resumed ablation, ...); every writer comes here with its kind. Refused,
    before anything is touched: a data set (:func:`is_dataset`, marker or not) unless ``kind``
    is ``dataset``; a non-empty ``path`` without pncd's marker (``.pncd-owned.json``); a
    marker of another kind (an export never replaces a run, a report never a data set); an
    entry of ``names`` (what the new output holds) that exists there but is not in the
    marker's list. ``kind`` None (a caller that does not know its kind) matches only a marker
    without a kind."""
    from pncd.errors import PncdError

    _known(kind)
    path = Path(path)
    if not path.is_dir() or not any(path.iterdir()):
        return
    if kind != "dataset" and is_dataset(path):
        raise PncdError(f"{path} is a data set; --force never replaces a data set: choose another {what} "
                        "(nothing was changed)")
    if not (path / OWNED_MARKER).is_file():
        raise PncdError(f"{path} was not written by pncd (no {OWNED_MARKER}); choose another {what} "
                        "or remove it yourself (nothing was changed)")
    have = owned_kind(path)
    # A marker without a kind was written by a pncd from before markers recorded one: it matches
    # every kind, so that older runs, exports and reports can still be resumed and replaced.
    if have is not None and have != kind:
        raise PncdError(f"{path} holds a pncd output of kind {have!r} (its {OWNED_MARKER}), not {kind!r}; "
                        f"--force replaces only an output of the same kind: choose another {what} (nothing was changed)")
    owned = owned_names(path)
    clash = sorted(n for n in set(names) - {OWNED_MARKER} if n not in owned
                   and ((path / n).exists() or (path / n).is_symlink()))
    if clash:
        more = f" (and {len(clash) - 1} more)" if len(clash) > 1 else ""
        raise PncdError(f"{path / clash[0]}{more} was not written by pncd (not listed in {path / OWNED_MARKER}); "
                        f"--force would replace it: move it away or choose another {what} (nothing was changed)")


def check_output(path: str | os.PathLike, force: bool, protect: tuple[str | os.PathLike | None, ...] = (),
                 what: str = "--out", empty_ok: bool = False, names: Iterable[str] = (), *, kind: str) -> Path:
    """Refuse an output of ``kind`` (one of :data:`KINDS`) that exists (without ``force``), that
    is a file or lies under one, that is (or holds) one of the ``protect`` inputs, symbolic
    links resolved (--force must never replace what it reads), or (with ``force``) that
    :func:`check_owned` refuses: a data set, a folder pncd did not write, an output of another
    kind, an entry of ``names`` (what the new output will hold) not in the marker's list."""
    from pncd.errors import PncdError

    _known(kind)
    path = check_parents(path, what)
    if path.exists() and not path.is_dir():
        raise PncdError(f"{what} {path} is a file, not a directory; choose another {what} (nothing was changed)")
    if path.exists() and not force and not (empty_ok and not any(path.iterdir())):
        raise PncdError(f"{path} already exists; choose another {what} or pass --force")
    target = path.resolve()
    for src in protect:
        if src is None:
            continue
        s = Path(src).resolve()
        if s == target or target in s.parents:
            raise PncdError(f"{what} {path} is {'the input' if s == target else 'a folder holding the input'} {src}; "
                            f"--force would replace it: choose another {what}")
    if force and path.exists():
        check_owned(path, names, what, kind=kind)
    return path


def claim_dir(path: str | os.PathLike, kind: str, names: Iterable[str] = (),
              protect: tuple[str | os.PathLike | None, ...] = (), what: str = "--out") -> Path:
    """Make ``path`` a working folder of ``kind`` that a command fills and continues (an
    ablation): refused as --force onto it would be (:func:`check_output`); created when missing,
    and its marker records ``kind`` and ``names``."""
    path = check_output(path, True, protect, what, names=names, kind=kind)
    path.mkdir(parents=True, exist_ok=True)
    write_owned(path, owned_names(path) | set(names), kind)
    return path


def swap_into(new: Path, final: Path) -> None:
    """Move the finished output ``new`` into ``final``: pncd's old entries there (its marker's
    list, and whatever the new output replaces) go, everything else in ``final`` stays. A
    ``final`` that ``new`` may not replace (:func:`check_owned`, with the kind ``new``'s marker
    records) is refused before anything is touched."""
    import shutil

    if not final.exists():
        os.replace(new, final)
        return
    kind = owned_kind(new)
    new_names = {p.name for p in new.iterdir()} - {OWNED_MARKER}
    check_owned(final, new_names, kind=kind)  # before anything is removed: a user's file is never replaced
    for name in (owned_names(final) | new_names):
        old = final / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    for name in sorted(new_names):
        os.replace(new / name, final / name)
    write_owned(final, new_names, kind)
    shutil.rmtree(new, ignore_errors=True)


def remove_stale_temporaries(path: Path) -> None:
    """Remove temporaries of ``path`` left by a pncd process that was killed (kill -9, power
    loss): their names carry the writer's process id, and that process is gone."""
    import shutil

    for p in path.parent.glob(f".{glob_escape(path.name)}.pncd-*-*.tmp"):
        pid = p.name[len(path.name) + 7:].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False,
               protect: tuple[str | os.PathLike | None, ...] = (), names: Iterable[str] = (), *,
               kind: str) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``path`` and move it into place on success.

    Refuses what :func:`check_output` refuses (an existing ``path`` without ``force``, a file,
    an input in ``protect``, and with ``force`` a data set, a folder pncd did not write, an
    output of another ``kind``, a file pncd did not write among ``names``). With ``force`` the
    old output stays untouched until the new one is complete; then only pncd's own entries of
    it are replaced (see ``swap_into``). The marker records ``kind``. On failure nothing is left.
    """
    path = check_output(path, force, protect, names=names, kind=kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.pncd-{os.getpid()}-", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        write_owned(tmp, [p.name for p in tmp.iterdir()], kind)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if path.exists() and not any(path.iterdir()):
            path.rmdir()
        swap_into(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content, as hex."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike) -> Any:
    from pncd.errors import PncdError

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PncdError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise PncdError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def versions() -> dict[str, str]:
    """Versions of the packages that shape a result (absent ones are left out)."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("pncd", "torch", "torchvision", "numpy", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
