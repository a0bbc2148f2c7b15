"""An exported artifact as the bench sees it: :class:`Artifact`, read from its ``manifest.json``."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pncd.errors import PncdError
from pncd.export.manifest import MANIFEST
from pncd.io import write_json


@dataclass(frozen=True)
class Artifact:
    """The parts of an artifact directory (written by ``pncd export``) the bench needs."""

    dir: Path
    manifest: dict[str, Any]
    target: str
    precision: str
    runtime: str
    model: str | None
    source_run: Path  # the training run it was exported from (absolute)
    input_name: str
    output_name: str
    data: dict[str, Any]  # the data spec it was exported with
    onnx: Path | None  # its ONNX file, when it has one
    static_batch: int | None  # the fixed batch size of its input (None: dynamic)
    source_check: str | None = None  # its source checkpoint against the manifest (set by the bench)
    origin: Path | None = None  # the folder named on the command line, once ``dir`` is its verified copy (snapshot)
    reference_copy: Path | None = None  # a private copy of the source checkpoint bytes whose SHA-256 was checked

    @property
    def folder(self) -> Path:
        """The artifact folder as the user named it (``dir`` may be a private, verified copy)."""
        return self.origin or self.dir

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint of the source run it was exported from (manifest ``source.checkpoint``),
        None when the manifest does not name one inside the source run (:meth:`checkpoint_problem`)."""
        name = (self.manifest.get("source") or {}).get("checkpoint")
        if name is None or self.checkpoint_problem():
            return None
        return self.source_run / name

    def checkpoint_problem(self) -> str | None:
        """Why the manifest's ``source.checkpoint`` is not a file inside the source run (a relative
        path that leaves it, symbolic links resolved, or not a name at all); None when it is one
        or names none."""
        name = (self.manifest.get("source") or {}).get("checkpoint")
        if name is None:
            return None
        if isinstance(name, str) and name and "\\" not in name and "\0" not in name:
            root = self.source_run.resolve()
            real = (root / name).resolve()
            if real != root and real.is_relative_to(root):
                return None
        return f"its source.checkpoint {name!r} is not a file inside the source run {self.source_run}"

    @property
    def checkpoint_sha256(self) -> str | None:
        sha = (self.manifest.get("source") or {}).get("checkpoint_sha256")
        return sha if isinstance(sha, str) and sha else None

    def reference_checkpoint(self) -> Path | None:
        """The weights its torch reference loads: the private copy of the checked checkpoint bytes
        (:attr:`reference_copy`), else :meth:`reference_source`."""
        return self.reference_copy or self.reference_source()

    def reference_source(self) -> Path | None:
        """The checkpoint of the source run its reference stands for: the one it was exported from,
        or (when the manifest does not name one, or it is gone) the run's default (``best``, else
        ``last``); None when the run has none."""
        if self.checkpoint is not None and self.checkpoint.is_file():
            return self.checkpoint
        return default_checkpoint(self.source_run)

    def check_source(self, reference: bool, allow_stale: bool, hashes: SourceCopies | None = None) -> str:
        """Its source checkpoint against the SHA-256 its manifest recorded at export time; returns
        what the report records (``source_check``). A checkpoint that changed since (the run was
        retrained), or that the manifest places outside the source run, is refused unless
        ``allow_stale``, and one that is gone while the torch reference (``reference``) needs it
        is refused: the bench would compare the artifact with other weights than it was exported
        from. A source run that is gone (the artifact copied to another machine) is only noted.
        ``hashes``: each checkpoint read once (and copied, for the reference to load those bytes)."""
        return self._source_check(reference, allow_stale, hashes or SourceCopies(None))[0]

    def with_source_checked(self, reference: bool, allow_stale: bool, sources: SourceCopies) -> Artifact:
        """This artifact with :attr:`source_check` set, and its torch reference bound to the very
        bytes checked (:attr:`reference_copy`, when ``sources`` copies)."""
        check, copy = self._source_check(reference, allow_stale, sources)
        return dataclasses.replace(self, source_check=check, reference_copy=copy)

    def _source_check(self, reference: bool, allow_stale: bool, sources: SourceCopies) -> tuple[str, Path | None]:
        bad = self.checkpoint_problem()
        if bad:
            if not allow_stale:
                raise PncdError(f"{self.folder}: {bad}, so the weights it was exported from cannot be checked; "
                                "re-export it or pass --allow-stale-source")
            return f"not checked ({bad}): benched with --allow-stale-source", None
        ck, want = self.checkpoint, self.checkpoint_sha256
        if ck is None or want is None:
            return "not recorded in the manifest", None
        if not self.source_run.is_dir():
            return "source run not found: not checked", None
        if not ck.is_file():
            if reference:
                raise PncdError(f"{self.folder} was exported from {ck}, which no longer exists; restore it, "
                                "re-export the artifact, or pass --no-reference")
            return "checkpoint not found: not checked", None
        have, copy = sources.read(ck, self.source_run)
        if have == want:
            return "sha256 matches the manifest", copy
        if not allow_stale:
            raise PncdError(f"{self.folder} was exported from {ck} with SHA-256 {want[:12]}…, but that file now has "
                            f"{have[:12]}… (retrained?); re-export it or pass --allow-stale-source")
        return f"differs from the manifest (sha256 {have[:12]}… vs {want[:12]}…): benched with --allow-stale-source", copy

    @classmethod
    def read(cls, path: str | os.PathLike) -> Artifact:
        """Read and check ``path``'s manifest; a clear one-line error for anything missing."""
        from pncd.targets.registry import find_manifest, read_manifest

        man_path = find_manifest(path)
        if man_path is None:
            raise PncdError(f"{path}: not an exported artifact (no manifest.json); pass a directory written by "
                            "pncd export")
        man = read_manifest(man_path)
        d = man_path.parent
        for key in ("source_run", "data"):
            if man.get(key) in (None, ""):
                raise PncdError(f"{man_path} lacks '{key}'; re-export the artifact with this pncd version")
        if not isinstance(man["data"], dict):
            raise PncdError(f"{man_path}: 'data' is not a data spec object; re-export the artifact")
        source = Path(man["source_run"])
        if not source.is_absolute():
            source = (d / source).resolve() if (d / source).exists() else source.resolve()
        model = man.get("model")
        if isinstance(model, dict):
            model = model.get("name")
        return cls(dir=d, manifest=man, target=str(man["target"]), precision=str(man["precision"]),
                   runtime=str(man.get("runtime") or man["target"]), model=str(model) if model else None,
                   source_run=source, input_name=str(man["input_name"]), output_name=str(man["output_name"]),
                   data=dict(man["data"]), onnx=_onnx_file(man, d), static_batch=_static_batch(man))

    @property
    def run_name(self) -> str:
        return self.source_run.name

    def verify(self) -> None:
        """The files against the manifest it was read with (:func:`pncd.export.manifest.check_files`:
        listed inside the folder, SHA-256) and its claims against the graph (precision, target):
        anything else is refused in one line."""
        self._checked(None)

    def snapshot(self, into: str | os.PathLike) -> Artifact:
        """:meth:`verify`, keeping the very bytes verified: each listed file is read once, checked
        and written to ``into`` with the manifest it was read with; the artifact returned runs
        from there (``dir``; ``origin`` is this folder), so a folder replaced meanwhile (an
        ``export --force``) cannot make the bench run files other than those it verified."""
        into = Path(into)
        into.mkdir(parents=True, exist_ok=True)
        self._checked(into)
        write_json(into / MANIFEST, self.manifest)
        return dataclasses.replace(self, dir=into, origin=self.folder, onnx=_onnx_file(self.manifest, into))

    def _checked(self, into: Path | None) -> None:
        from pncd.export.manifest import check_files, claim_problem, listing_problems

        listing = listing_problems(self.dir, self.manifest)
        if listing:
            raise PncdError(f"{self.folder}: {listing[0]}{_more(listing)}; re-export the artifact")
        problems = check_files(self.dir, self.manifest, into)
        if problems:
            raise PncdError(f"{self.folder}: {problems[0]}{_more(problems)}; re-export the artifact, or pass "
                            "--no-verify to bench it anyway")
        claim = claim_problem(into or self.dir, self.manifest)
        if claim:
            raise PncdError(f"{self.folder}: {claim}")


class SourceCopies:
    """Each source checkpoint a bench checks, read once: its SHA-256 and (with a folder) a private
    copy of those bytes beside a copy of the run's config.json, which the torch reference loads."""

    def __init__(self, into: Path | None) -> None:
        self.into = into
        self.seen: dict[Path, tuple[str, Path | None]] = {}

    def read(self, checkpoint: Path, run: Path) -> tuple[str, Path | None]:
        """(SHA-256, private copy or None) of ``checkpoint``'s bytes (of the run ``run``), read the
        first time only."""
        import hashlib

        from pncd.checkpoint import CONFIG

        if checkpoint not in self.seen:
            data = checkpoint.read_bytes()
            copy = None
            if self.into is not None:
                private = self.into / f"source-{len(self.seen)}"
                private.mkdir(parents=True)
                if (run / CONFIG).is_file():
                    shutil.copyfile(run / CONFIG, private / CONFIG)
                copy = private / checkpoint.name
                copy.write_bytes(data)
            self.seen[checkpoint] = (hashlib.sha256(data).hexdigest(), copy)
        return self.seen[checkpoint]


def artifact_name(run: str, target: str, precision: str, checkpoint: str | None = None) -> str:
    """The one name of an exported artifact, or of a torch reference (``target`` "torch",
    ``precision`` "fp32"): ``<run>[-<checkpoint>]-<target>-<precision>``, e.g.
    ``enet-pncd-openvino-int8`` and ``enet-pncd-torch-fp32`` (``checkpoint``: the stem of a
    checkpoint other than the run's default). The bench's console lines, report.json's ``id`` /
    ``key`` / ``name``, report.md, the gate's rows, baselines, overlay file names, the demo's
    table and ``pncd benchmark``'s folders all use it."""
    text = "-".join(part for part in (run, checkpoint, target, precision) if part)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def former_names(entry: dict[str, Any]) -> list[str]:
    """Names a report entry had in baselines recorded before :func:`artifact_name` was the one
    scheme: an artifact of a run whose name does not contain its model's was
    ``<run>-<model>-<target>-<precision>``. The gate matches a baseline entry by them too."""
    run, model = Path(str(entry.get("source_run") or "")).name, entry.get("model")
    if entry.get("kind") != "artifact" or not run or not model or str(model) in run:
        return []
    return [artifact_name(f"{run}-{model}", str(entry.get("target")), str(entry.get("precision")))]


def _more(problems: list[str]) -> str:
    return f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""


def default_checkpoint(run: Path) -> Path | None:
    """The checkpoint pncd loads from ``run`` when none is named (best, else last); None if none."""
    from pncd.checkpoint import checkpoint_path

    try:
        return checkpoint_path(run)
    except PncdError:
        return None


def int8_record(man: dict[str, Any]) -> dict[str, Any] | None:
    """Where an INT8 artifact's quantization came from, as its manifest records it: the route
    (ptq / qat), the per-block sensitivity (``--sensitivity``; the export writes the blocks by
    Dice drop, largest first) and what ``--keep-float auto`` kept. None for other precisions."""
    if man.get("precision") != "int8":
        return None
    build = man.get("build") or {}
    sens = build.get("sensitivity") or {}
    auto = build.get("keep_float_auto") or {}
    blocks = [{"block": b.get("block"), "dice": b.get("dice"), "drop": b.get("drop")}
              for b in sens.get("blocks") or [] if isinstance(b, dict)]
    return {"route": (build.get("quantization") or {}).get("route"),
            "float_val_dice": sens.get("float_dice", auto.get("float_dice")),
            "sensitivity": blocks or None,
            "keep_float_auto": {k: auto.get(k) for k in ("kept_blocks", "dice", "drop", "max_dice_drop", "reached", "artifact")}
            if auto else None}


def requires_vnni(man: dict[str, Any]) -> bool:
    """Whether an artifact computes correctly only on x86 CPUs with VNNI: INT8 for a CPU runtime
    with 8-bit weights (``pncd export --int8-cpu vnni``, and every INT8 export before 7-bit weights
    were the default, whose manifests say nothing), whose u8 x s8 pair sums saturate in int16 elsewhere."""
    from pncd.export.pipeline import CPU_INT8_TARGETS

    if man.get("precision") != "int8" or man.get("target") not in CPU_INT8_TARGETS:
        return False
    q = (man.get("build") or {}).get("quantization") or {}
    return bool(q.get("requires_vnni", True))


def _onnx_file(man: dict[str, Any], d: Path) -> Path | None:
    for name in (man.get("artifact"), man.get("onnx")):
        if isinstance(name, str) and name.endswith(".onnx") and (d / name).is_file():
            return d / name
    return None


def _static_batch(man: dict[str, Any]) -> int | None:
    shape = (man.get("input") or {}).get("shape") or []
    return int(shape[0]) if shape and isinstance(shape[0], int) else None
