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

A reader trusts a manifest only as far as the files bear it out (:func:`verify`, and the bench's
:meth:`pncd.bench.artifact.Artifact.snapshot`): every ``files`` entry a plain relative path
inside the folder, the files a runner loads listed there (:func:`listing_problems`), each with
its SHA-256 (:func:`check_files`), and the ``target`` / ``precision`` borne out by the graph
(:func:`claim_problem`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pncd.errors import PncdError
from pncd.io import sha256_file
from pncd.targets.registry import MANIFEST

FORMAT = "pncd-export"
FORMAT_VERSION = 1
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
    """Problems with an export directory's files against its manifest (empty list = intact):
    :func:`listing_problems`, then each listed file's SHA-256 (:func:`check_files`), then
    whether the graph is of the precision the manifest claims (:func:`claim_problem`).

    ``extras``: also name files the manifest does not list (a user's notes are harmless to a
    runner, so the bench passes ``extras=False``)."""
    from pncd.io import OWNED_MARKER, read_json

    d = Path(directory)
    man = read_json(d / MANIFEST)
    if not isinstance(man, dict):
        return [f"{MANIFEST}: not a JSON object; re-export the artifact"]
    problems = check_files(d, man)
    if not problems:
        problems += [p for p in [claim_problem(d, man)] if p]
    listed = {e.get("name") for e in man.get("files") or [] if isinstance(e, dict)}
    for p in d.iterdir() if extras else ():
        if p.is_file() and p.name not in (MANIFEST, OWNED_MARKER) and p.name not in listed:
            problems.append(f"{p.name}: not listed in the manifest")
    return problems


def name_problem(name: Any) -> str | None:
    """Why ``name`` is not a plain relative path (no ``..``, ``.``, empty part, backslash or
    leading ``/``) of a file in an export folder; None when it is one."""
    if not isinstance(name, str) or not name:
        return f"{name!r} is not a file name"
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        return f"{name!r} is not a plain relative path inside the folder"
    return None


def inside(directory: str | os.PathLike, name: str) -> Path | None:
    """``directory / name`` with symbolic links resolved, or None when that leaves ``directory``."""
    root = Path(directory).resolve()
    path = (root / name).resolve()
    return path if path != root and path.is_relative_to(root) else None


def named_files(man: dict[str, Any]) -> dict[str, Any]:
    """The files a runner loads by the manifest's word: ``artifact``, ``onnx`` and the TensorRT
    ``engine`` (key -> name; the unset ones left out)."""
    engine = (man.get("tensorrt") or {}).get("engine") if isinstance(man.get("tensorrt"), dict) else None
    named = {"artifact": man.get("artifact"), "onnx": man.get("onnx"), "tensorrt.engine": engine}
    return {k: v for k, v in named.items() if k == "artifact" or v not in (None, "")}


def listing_problems(directory: str | os.PathLike, man: dict[str, Any]) -> list[str]:
    """What is wrong with the manifest's ``files`` list itself: not a non-empty list of (name,
    sha256), a name that is not a plain relative path inside the folder (symbolic links
    resolved), a name listed twice, or a file a runner loads (:func:`named_files`) not listed."""
    files = man.get("files")
    if not isinstance(files, list) or not files or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("sha256"), str) for e in files):
        return [f"{MANIFEST}: no valid 'files' list (name, sha256); re-export the artifact"]
    problems = []
    for e in files:
        why = name_problem(e["name"])
        if why is None and inside(directory, e["name"]) is None:
            why = f"{e['name']!r} leads outside the folder (a symbolic link?)"
        if why:
            problems.append(f"{MANIFEST}: files entry {why}")
    names = [e["name"] for e in files]
    problems += [f"{MANIFEST}: {n!r} is listed twice in 'files'" for n in sorted({n for n in names if names.count(n) > 1})]
    for key, name in named_files(man).items():
        if name not in names:
            problems.append(f"{MANIFEST}: '{key}' {name!r} is not one of the files it lists with a SHA-256")
    return problems


def check_files(directory: str | os.PathLike, man: dict[str, Any], into: str | os.PathLike | None = None) -> list[str]:
    """:func:`listing_problems`, else each listed file against its SHA-256. Each file is read
    once; with ``into``, the very bytes that matched are written there (a private copy, checked
    again once written), so a caller can run what it verified even if the folder changes."""
    import hashlib

    problems = listing_problems(directory, man)
    if problems:
        return problems
    for e in man["files"]:
        path = inside(directory, e["name"])
        if path is None or not path.is_file():
            problems.append(f"{e['name']}: missing")
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != e["sha256"]:
            problems.append(f"{e['name']}: SHA-256 differs from the manifest")
        elif into is not None:
            copy = Path(into) / e["name"]
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(data)
            if sha256_file(copy) != e["sha256"]:
                problems.append(f"{e['name']}: its copy in {into} differs from what was read (disk full?)")
    return problems


# the graph files each built-in target's runner loads (a plug-in target's are not checked)
TARGET_SUFFIXES = {"onnxruntime": (".onnx",), "openvino": (".xml",), "tensorrt": (".onnx", ".engine", ".plan"),
                   "jetson": (".onnx", ".engine", ".plan")}
INT8_ONNX_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                 "ConvInteger", "MatMulInteger"}


def graph_marks(path: Path) -> set[str] | None:
    """What the graph in ``path`` shows, cheaply (no runtime, weights not decoded): "int8"
    (ONNX: a quantization operator or an 8/4-bit integer initializer; OpenVINO IR: a
    FakeQuantize layer or an 8/4-bit integer constant), "fp16" (float16 initializers, casts or
    constants). None for a file that is neither ONNX nor an OpenVINO IR."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        import onnx
        from onnx import TensorProto as T

        model = onnx.load(str(path), load_external_data=False)
        ints, half = {T.INT8, T.UINT8, T.INT4, T.UINT4}, T.FLOAT16
        nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
        types = [t.data_type for t in model.graph.initializer]
        types += [a.t.data_type for n in nodes if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
        marks = {"int8"} if any(n.op_type in INT8_ONNX_OPS for n in nodes) or any(t in ints for t in types) else set()
        casts = any(n.op_type == "Cast" and any(a.name == "to" and a.i == half for a in n.attribute) for n in nodes)
        return marks | ({"fp16"} if casts or half in types else set())
    if suffix == ".xml":
        import xml.etree.ElementTree as ET

        marks = set()
        for layer in ET.parse(path).getroot().iter("layer"):
            data = layer.find("data")
            kind = (data.get("element_type") if data is not None else None) if layer.get("type") == "Const" else None
            if layer.get("type") == "FakeQuantize" or kind in ("i8", "u8", "i4", "u4"):
                marks.add("int8")
            elif kind == "f16":
                marks.add("fp16")
        return marks
    return None


def claim_problem(directory: str | os.PathLike, man: dict[str, Any]) -> str | None:
    """Whether the manifest's ``target``, ``runtime`` and ``precision`` describe the files: the
    runtime is the target's, the artifact is a file that target runs, and its graph (or, for a
    TensorRT engine, the ONNX it was built from) is of that precision: INT8 has quantization,
    FP16 float16 and no quantization, FP32 neither. None when it does (or the graph is of a kind
    pncd cannot read)."""
    from pncd.targets.registry import check_pair

    target, precision, artifact = man.get("target"), man.get("precision"), str(man.get("artifact"))
    redo = "the manifest does not describe this artifact: re-export it"
    try:
        runtime = check_pair(str(target), str(precision)).runtime
    except PncdError as e:
        return f"{MANIFEST}: {e}; {redo}"
    if man.get("runtime") not in (None, runtime):
        return f"{MANIFEST}: runtime {man.get('runtime')!r} is not that of target {target!r} ({runtime}); {redo}"
    if not artifact.lower().endswith(TARGET_SUFFIXES.get(str(target), ("",))):
        return f"{MANIFEST}: target {target!r} does not run {artifact!r}; {redo}"
    graph = next((n for n in (artifact, man.get("onnx")) if isinstance(n, str) and graph_marks_kind(n)), None)
    if graph is None:
        return None
    try:
        marks = graph_marks(Path(directory) / graph) or set()
    except Exception as e:  # a damaged graph file: onnx's DecodeError, ElementTree's ParseError
        return f"{graph}: not a readable graph ({type(e).__name__}); re-export the artifact"
    fits = {"int8": "int8" in marks, "fp16": marks == {"fp16"}}.get(str(precision), not marks)
    if not fits:
        shown = "INT8 (quantization)" if "int8" in marks else "FP16" if "fp16" in marks else "FP32"
        return f"{graph}: the manifest says {precision}, but its graph is {shown}; {redo}"
    return None


def checked_on(man: dict[str, Any]) -> str:
    """Where an export's parity check ran and what it computed in, in words: ``computed in X`` on
    the target's own runtime; where it ran on another one (a TensorRT ONNX on ONNX Runtime),
    ``checked on onnxruntime (TensorRT not installed)``, or for a Jetson artifact ``checked on
    onnxruntime (the engine is built on the device)``."""
    first = man.get("parity") or {}
    ran = str(first.get("runtime") or man.get("runtime")).split(" ")[0]
    runtime = str(man.get("runtime") or man.get("target"))
    if ran == runtime:
        return f"computed in {first.get('inference_precision')}"
    why = ("the engine is built on the device" if man.get("target") == "jetson"
           else f"{'TensorRT' if runtime == 'tensorrt' else runtime} not installed")
    return f"checked on {ran} ({why})"


def graph_marks_kind(name: str) -> bool:
    """Whether :func:`graph_marks` reads files named like ``name`` (ONNX, OpenVINO IR)."""
    return name.lower().endswith((".onnx", ".xml"))


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


def source_record(run: str | os.PathLike, checkpoint: Path, cfg: dict[str, Any], checkpoint_sha256: str | None = None,
                  config_sha256: str | None = None) -> dict[str, Any]:
    """Where the weights came from, with hashes that tie the export to them, and whether the run
    finished (``complete``: False for a run stopped early; ``epochs_done`` of ``epochs``).
    ``checkpoint_sha256`` / ``config_sha256``: the hashes of the bytes the export loaded
    (:func:`pncd.checkpoint.load_run`); hashing the files now would vouch for whatever replaced
    them meanwhile (the default, for a caller that has none)."""
    from pncd.checkpoint import CONFIG
    from pncd.rundir import run_progress

    run = Path(run)
    run_dir = run.parent if run.is_file() else run
    cfg_path = run_dir / CONFIG
    return {
        "run": str(run_dir.resolve()),
        "config_sha256": config_sha256 or (sha256_file(cfg_path) if cfg_path.is_file() else None),
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": checkpoint_sha256 or sha256_file(checkpoint),
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
