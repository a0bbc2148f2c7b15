"""One FP32 ONNX of a run, exported once and built from by every export of that run.

Each ``pncd export`` starts by exporting the run's network to ONNX (torch.export, then
onnxscript's clean-up: the slow, precision-independent part). :func:`write_shared_onnx` does that
once, as the export does it (:func:`pncd.targets.onnx_export.export_onnx`, the same pinned
options), into ``DIR/model.onnx`` beside ``DIR/onnx.json``: the source (run, checkpoint and
config.json SHA-256 of the bytes the weights were loaded from), the input (channels, height,
width, dynamic batch), the exporter's options and the file's SHA-256.

An export given such a file (``ExportOptions.onnx``, ``pncd export --onnx``) builds from it
instead of exporting again, after :func:`take` checked, before anything is written, that it was
exported from the very checkpoint the export loaded (SHA-256), at the export's input size and
batch, and that the file is still the one recorded; the bytes it builds from are checked again
as they are copied (:meth:`SharedOnnx.copy_to`). The manifest's ``exporter`` says so
(``shared_onnx``, ``onnx_sha256``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pncd.errors import PncdError

RECORD = "onnx.json"
ONNX = "model.onnx"
FORMAT = "pncd-fp32-onnx"


@dataclass
class SharedOnnx:
    """A shared FP32 ONNX checked against the run an export loaded."""

    path: Path
    record: dict[str, Any]

    def copy_to(self, dest: Path) -> dict[str, Any]:
        """Copy the ONNX to ``dest`` (the bytes checked against its recorded SHA-256 once more);
        returns the manifest's ``exporter`` record."""
        data = self.path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if sha != self.record["sha256"]:
            raise PncdError(f"{self.path} changed while the export ran (SHA-256 {sha[:12]}…, recorded "
                            f"{self.record['sha256'][:12]}…); export it again or leave out --onnx")
        dest.write_bytes(data)
        return {**self.record["exporter"], "shared_onnx": str(self.path), "onnx_sha256": sha}


def take(path: str | Path, src: Any, dynamic_batch: bool) -> SharedOnnx:
    """The shared ONNX at ``path``, checked against the loaded run ``src``
    (:class:`pncd.export.source.Source`): written by :func:`write_shared_onnx` (its ``onnx.json``
    beside it), from the same checkpoint bytes (SHA-256), at the same input and batch, unchanged
    since. One PncdError line naming the file and what to do otherwise."""
    from pncd.io import read_json, sha256_file

    p = Path(path)
    redo = "export it again (pncd benchmark writes one) or leave out --onnx"
    if not p.is_file():
        raise PncdError(f"--onnx {p}: no such file; {redo}")
    rec_path = p.parent / RECORD
    rec = read_json(rec_path) if rec_path.is_file() else None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT or not isinstance(rec.get("sha256"), str):
        raise PncdError(f"--onnx {p}: no {RECORD} of format {FORMAT} beside it, so the weights it was exported from "
                        f"cannot be checked; {redo}")
    want = (rec.get("source") or {}).get("checkpoint_sha256")
    if want != src.checkpoint_sha256:
        raise PncdError(f"--onnx {p} was exported from a checkpoint with SHA-256 {str(want)[:12]}…, but {src.checkpoint} "
                        f"has {str(src.checkpoint_sha256)[:12]}… (retrained?); {redo}")
    shape = {"channels": src.channels, "height": src.size[0], "width": src.size[1], "dynamic_batch": bool(dynamic_batch)}
    if rec.get("input") != shape:
        raise PncdError(f"--onnx {p} takes {rec.get('input')}, this export {shape}; {redo}")
    if sha256_file(p) != rec["sha256"]:
        raise PncdError(f"--onnx {p}: its SHA-256 differs from the one in {rec_path.name} (changed since it was "
                        f"exported); {redo}")
    return SharedOnnx(p, rec)


def write_shared_onnx(run: str | Path, opts: Any, out: str | Path,
                      log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Export ``run``'s network once into ``out`` (``model.onnx`` + ``onnx.json``, written
    atomically; pncd's files of an earlier one there are replaced) at the input size and batch of
    ``opts`` (:class:`~pncd.export.options.ExportOptions`); returns the record."""
    from pncd.export.manifest import source_record
    from pncd.export.source import load_source
    from pncd.io import atomic_dir, sha256_file, write_json
    from pncd.targets.onnx_export import export_onnx

    src = load_source(run, opts)
    h, w = src.size
    with atomic_dir(out, force=True, protect=(src.run_dir,), kind="export") as tmp:
        log(f"exporting {src.cfg['model'].get('name')} to ONNX once ({h}x{w}, "
            f"{'dynamic' if opts.dynamic_batch else 'static'} batch): every artifact is built from it")
        exporter = export_onnx(src.model, tmp / ONNX, src.channels, h, w, opts.dynamic_batch)
        record = {"format": FORMAT, "model": src.cfg["model"].get("name"),
                  "source": source_record(run, src.checkpoint, src.cfg, src.checkpoint_sha256, src.config_sha256),
                  "input": {"channels": src.channels, "height": h, "width": w, "dynamic_batch": bool(opts.dynamic_batch)},
                  "exporter": exporter, "sha256": sha256_file(tmp / ONNX)}
        write_json(tmp / RECORD, record)
    return record
