"""``manifest.json``: everything needed to trust, reproduce and run an exported artifact.

Written last into the export directory (which is then renamed into place), so a directory with
a manifest is complete. Keys (the bench reads the first group, see
:mod:`pncd.targets.registry`):

- ``target``, ``precision``, ``runtime``, ``artifact`` (file the runner loads), ``onnx`` (the
  ONNX file, if any), ``input_name``, ``output_name``, ``input`` / ``output`` (name, shape,
  dtype, layout), ``data`` (the run's DataSpec dict: preprocess identically), ``source_run``;
- ``source`` (run path, config.json and checkpoint SHA-256, ``complete``: False for a run that
  stopped before its last epoch, ``epochs_done`` of ``epochs``), ``model`` (name, channels,
  classes, parameters, role), ``calibration`` (data root, split, count, method) or null,
  ``exporter`` (the pinned torch.onnx options), ``build`` (the backend's conversion options),
  ``tensorrt`` (engine build plans, targets tensorrt/jetson), ``parity`` and ``checks``,
  ``files`` (name, bytes, sha256 of every other file), ``versions``, ``options``, ``created``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pncd.errors import PncdError
from pncd.io import sha256_file

FORMAT = "pncd-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EXTRA_PACKAGES = ("onnxscript", "onnxconverter-common", "polygraphy")


def file_entries(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """Name, size and SHA-256 of every file in ``directory`` except the manifest (and pncd's
    ownership marker), sorted by name."""
    from pncd.io import OWNED_MARKER

    d = Path(directory)
    return [
        {"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(d.iterdir())
        if p.is_file() and p.name not in (MANIFEST, OWNED_MARKER)
    ]


def verify(directory: str | os.PathLike, extras: bool = True) -> list[str]:
    """Problems with an export directory's files against its manifest (empty list = intact).

    ``extras``: also name files the manifest does not list (a user's notes are harmless to a
    runner, so the bench passes ``extras=False``)."""
    from pncd.io import OWNED_MARKER, read_json

    d = Path(directory)
    man = read_json(d / MANIFEST)
    files = man.get("files") if isinstance(man, dict) else None
    if not isinstance(files, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str)
                                              and isinstance(e.get("sha256"), str) for e in files):
        return [f"{MANIFEST}: no valid 'files' list (name, sha256); re-export the artifact"]
    problems = []
    listed = {e["name"] for e in files}
    for e in files:
        p = d / e["name"]
        if not p.is_file():
            problems.append(f"{e['name']}: missing")
        elif sha256_file(p) != e["sha256"]:
            problems.append(f"{e['name']}: SHA-256 differs from the manifest")
    for p in d.iterdir() if extras else ():
        if p.is_file() and p.name not in (MANIFEST, OWNED_MARKER) and p.name not in listed:
            problems.append(f"{p.name}: not listed in the manifest")
    return problems


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    from pncd.io import versions

    out = versions()
    for pkg in EXTRA_PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def source_record(run: str | os.PathLike, checkpoint: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Where the weights came from, with hashes that tie the export to them, and whether the run
    finished (``complete``: False for a run stopped early; ``epochs_done`` of ``epochs``)."""
    from pncd.checkpoint import CONFIG
    from pncd.rundir import run_progress

    run = Path(run)
    run_dir = run.parent if run.is_file() else run
    cfg_path = run_dir / CONFIG
    return {
        "run": str(run_dir.resolve()),
        "config_sha256": sha256_file(cfg_path) if cfg_path.is_file() else None,
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_file(checkpoint),
        "kind": cfg.get("kind"),
        **run_progress(run_dir, cfg).record(),
    }


def model_record(model, cfg: dict[str, Any]) -> dict[str, Any]:
    from pncd.models import count_parameters, model_info

    spec = dict(cfg.get("model") or {})
    name = spec.get("name") or getattr(model, "pncd_spec", {}).get("name")
    try:
        role = model_info(name).get("role") if name else None
    except PncdError:
        role = None
    return {"name": name, "in_channels": spec.get("in_channels"), "num_classes": spec.get("num_classes"),
            "parameters": count_parameters(model), "role": role}


def build_manifest(directory: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """The manifest dict: fixed header, the caller's fields, then files/versions/created."""
    man: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION}
    man.update(fields)
    man["files"] = file_entries(directory)
    man["versions"] = package_versions()
    man["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return man
