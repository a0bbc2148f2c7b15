"""An exported artifact as the bench sees it: :class:`Artifact`, read from its ``manifest.json``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pncd.errors import PncdError


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

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint of the source run it was exported from (manifest ``source.checkpoint``),
        None when the manifest does not name one."""
        name = (self.manifest.get("source") or {}).get("checkpoint")
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            return None
        return self.source_run / name

    @property
    def checkpoint_sha256(self) -> str | None:
        sha = (self.manifest.get("source") or {}).get("checkpoint_sha256")
        return sha if isinstance(sha, str) and sha else None

    def reference_checkpoint(self) -> Path | None:
        """The weights its torch reference loads: the checkpoint it was exported from, or (when
        the manifest does not name one, or it is gone) the run's default (``best``, else
        ``last``); None when the run has none."""
        if self.checkpoint is not None and self.checkpoint.is_file():
            return self.checkpoint
        return default_checkpoint(self.source_run)

    def check_source(self, reference: bool, allow_stale: bool, hashes: dict[Path, str] | None = None) -> str:
        """Its source checkpoint against the SHA-256 its manifest recorded at export time; returns
        what the report records (``source_check``). A checkpoint that changed since (the run was
        retrained) is refused unless ``allow_stale``, and one that is gone while the torch
        reference (``reference``) needs it is refused: the bench would compare the artifact with
        other weights than it was exported from. A source run that is gone (the artifact copied to
        another machine) is only noted. ``hashes``: a cache of file -> SHA-256."""
        from pncd.io import sha256_file

        ck, want = self.checkpoint, self.checkpoint_sha256
        if ck is None or want is None:
            return "not recorded in the manifest"
        if not self.source_run.is_dir():
            return "source run not found: not checked"
        if not ck.is_file():
            if reference:
                raise PncdError(f"{self.dir} was exported from {ck}, which no longer exists; restore it, re-export "
                                "the artifact, or pass --no-reference")
            return "checkpoint not found: not checked"
        hashes = {} if hashes is None else hashes
        have = hashes.get(ck) or hashes.setdefault(ck, sha256_file(ck))
        if have == want:
            return "sha256 matches the manifest"
        if not allow_stale:
            raise PncdError(f"{self.dir} was exported from {ck} with SHA-256 {want[:12]}…, but that file now has "
                            f"{have[:12]}… (retrained?); re-export it or pass --allow-stale-source")
        return f"differs from the manifest (sha256 {have[:12]}… vs {want[:12]}…): benched with --allow-stale-source"

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
        """The files against the SHA-256 of the manifest: a swapped or damaged file is refused."""
        from pncd.export.manifest import verify

        problems = verify(self.dir, extras=False)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise PncdError(f"{self.dir}: {problems[0]}{more}; re-export the artifact, or pass --no-verify to "
                            "bench it anyway")


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
