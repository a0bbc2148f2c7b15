"""Export targets, their precisions, and ``load_runner``: the API the bench stage uses.

Targets and precisions
    ``TARGETS`` is a :class:`pncd.registry.Registry` of :class:`pncd.targets.base.Target`
    (also importable as ``pncd.targets.TARGETS``); every built-in target takes ``fp32``, ``fp16``
    and ``int8``. A new backend is one module defining a ``Target`` and one
    :func:`register_target` line below (or a ``register_target`` call at run time: a plug-in).
    :func:`valid_pairs` lists the (target, precision) pairs and :func:`check_pair` turns a bad
    pair into a one-line :class:`PncdError` that lists the valid ones.

    ============  ===========================================  ==========================
    target        what ``pncd export`` writes                  runs on (runner)
    ============  ===========================================  ==========================
    onnxruntime   model.onnx / model_fp16.onnx / model_int8    OnnxRuntimeRunner
    openvino      model.xml + model.bin (IR)                   OpenVinoRunner
    tensorrt      the ONNX TensorRT consumes (+ model.engine   TensorRTRunner (engine),
                  where ``tensorrt`` is importable)            or ONNX Runtime on request
    jetson        the ONNX TensorRT consumes; the engine is    the bench stage, on the
                  built on the device by ``pncd bench``        device
    ============  ===========================================  ==========================

Loading an artifact
    ``load_runner(artifact, device="cpu", runtime=None, threads=None) -> Runner`` takes an
    export directory (or its ``manifest.json``, or a file inside it), reads the manifest and
    returns an inactive runner for it::

        from pncd.targets.registry import load_runner, read_manifest
        man = read_manifest("exports/enet-ov-int8")
        with load_runner("exports/enet-ov-int8", device="cpu", threads=2) as r:
            logits = r.infer({man["input_name"]: x})[man["output_name"]]

    ``device`` is "cpu" or "cuda" (OpenVINO also takes its own names: "GPU", "NPU", "AUTO").
    A TensorRT / Jetson artifact needs ``device="cuda"`` and ``tensorrt`` (the engine in the
    directory is used when the installed TensorRT built it, otherwise one is built in memory);
    ``runtime="onnxruntime"`` runs its ONNX on ONNX Runtime instead (how it is checked where
    TensorRT is absent). A bare ``.onnx`` / ``.xml`` / ``.engine`` file without a manifest is
    loaded by its suffix. Every runner takes and returns dicts of named float32 numpy arrays,
    exposes ``input_names()`` and a ``settings`` dict (what it ran with), and records
    ``last_inference_time``.

Manifest keys the bench reads (written by :mod:`pncd.export.manifest`): ``target``,
``precision``, ``runtime``, ``artifact`` (the file the runner loads), ``input_name``,
``output_name``, ``input`` (name/shape/dtype), ``source_run``, ``model``, ``data`` (the run's
``DataSpec`` dict, for identical preprocessing), ``files`` (name, bytes, sha256),
``tensorrt`` (build plans per TensorRT version, for targets tensorrt/jetson).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pncd.errors import PncdError
from pncd.registry import Registry
from pncd.targets import onnxrt, openvino_rt, trt
from pncd.targets.base import PRECISIONS, Runner, RunnerOptions, Target

MANIFEST = "manifest.json"

__all__ = ["MANIFEST", "PRECISIONS", "TARGETS", "check_pair", "find_manifest", "load_runner", "read_manifest",
           "register_target", "valid_pairs"]

TARGETS: Registry[Target] = Registry("target")


def register_target(target: Target) -> Target:
    """Add ``target`` to :data:`TARGETS` under its name (a name registered twice is a ValueError)."""
    TARGETS.register(target.name, precisions=target.precisions)(target)
    return target


register_target(onnxrt.TARGET)
register_target(openvino_rt.TARGET)
register_target(trt.TENSORRT)
register_target(trt.JETSON)


def valid_pairs() -> list[tuple[str, str]]:
    """Every (target, precision) pair ``pncd export`` accepts."""
    return [(t, p) for t in TARGETS for p in TARGETS.get(t).precisions]


def check_pair(target: str, precision: str) -> Target:
    """The target, or a PncdError listing the valid target/precision pairs."""
    pairs = ", ".join(f"{t}/{p}" for t, p in valid_pairs())
    if target not in TARGETS:
        raise PncdError(f"unknown target {target!r}; valid target/precision pairs: {pairs}")
    spec = TARGETS.get(target)
    if precision not in spec.precisions:
        raise PncdError(f"target {target!r} has no precision {precision!r}; valid target/precision pairs: {pairs}")
    return spec


# ---------------------------------------------------------------------------------------------
# Loading artifacts
# ---------------------------------------------------------------------------------------------


def find_manifest(artifact: str | os.PathLike) -> Path | None:
    """The manifest.json of an export directory, of a file inside one, or the file itself."""
    p = Path(artifact)
    if p.is_file() and p.name == MANIFEST:
        return p
    d = p if p.is_dir() else p.parent
    m = d / MANIFEST
    return m if m.is_file() else None


def read_manifest(artifact: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an export directory (or of a file inside it), checked for the keys we use."""
    from pncd.io import read_json

    path = find_manifest(artifact)
    if path is None:
        raise PncdError(f"{artifact}: no {MANIFEST} found; pass a directory written by pncd export")
    man = read_json(path)
    missing = [k for k in ("target", "precision", "artifact", "input_name", "output_name") if k not in man]
    if missing:
        raise PncdError(f"{path} lacks {missing}; re-export the artifact with this pncd version")
    return man


def load_runner(
    artifact: str | os.PathLike,
    device: str | None = "cpu",
    runtime: str | None = None,
    threads: int | None = None,
    inference_precision: str | None = None,
) -> Runner:
    """An inactive runner for an exported artifact (see the module docstring).

    ``inference_precision`` (OpenVINO): auto|f32|f16|bf16; None = what the artifact was
    exported and checked with (its manifest), else auto.

    ``runtime`` overrides the manifest's runtime with another target's runner: "onnxruntime"
    runs a TensorRT/Jetson artifact's ONNX on ONNX Runtime (or an OpenVINO artifact's ONNX, when
    present).
    """
    path = Path(artifact)
    manifest_path = find_manifest(path)
    if manifest_path is None:
        if path.is_file():
            return _runner_for_file(path, device, runtime, RunnerOptions(threads, inference_precision=inference_precision))
        raise PncdError(f"{path}: not an exported artifact (no {MANIFEST}); pass a directory written by pncd export")
    man = read_manifest(manifest_path)
    d = manifest_path.parent
    target = check_pair(man["target"], man["precision"])
    runtime = runtime or man.get("runtime") or target.runtime
    main = _inside(d, man["artifact"], manifest_path)
    if not main.is_file():
        raise PncdError(f"{main}: listed in {manifest_path} but missing; re-export the artifact")
    if runtime != target.runtime:  # another target's runner, e.g. ONNX Runtime on a TensorRT artifact's ONNX
        if runtime not in TARGETS:
            raise PncdError(f"runtime {runtime!r} is unknown; use one of {', '.join(TARGETS)}")
        target = TARGETS.get(runtime)
        if runtime == "onnxruntime" and main.suffix != ".onnx":
            onnx = man.get("onnx")
            if not onnx or not _inside(d, onnx, manifest_path).is_file():
                raise PncdError(f"{d}: this {man['target']} artifact has no ONNX file for ONNX Runtime; re-export it")
            main = d / onnx
    engine = (man.get("tensorrt") or {}).get("engine") if isinstance(man.get("tensorrt"), dict) else None
    if engine:
        _inside(d, engine, manifest_path)
    recorded = (man.get("inference_precision") or {}).get("requested")
    opts = RunnerOptions(threads, precision=man["precision"], inference_precision=inference_precision or recorded,
                      manifest=man, directory=d)
    return target.runner(main, device, opts)


def _inside(d: Path, name: object, manifest_path: Path) -> Path:
    """``d / name`` for a file the manifest names: a plain relative path that stays inside the
    export folder, symbolic links resolved; else one line (a manifest must not make a runner
    load a file from elsewhere)."""
    bad = not isinstance(name, str) or not name or name.startswith("/") or "\\" in name \
        or any(part in ("", ".", "..") for part in name.split("/"))
    if not bad:
        root = d.resolve()
        real = (root / str(name)).resolve()
        bad = real == root or not real.is_relative_to(root)
    if bad:
        raise PncdError(f"{manifest_path}: {name!r} is not a file inside {d}; re-export the artifact")
    return d / str(name)


def _runner_for_file(path: Path, device: str | None, runtime: str | None, opts: RunnerOptions) -> Runner:
    """A bare file without a manifest: the target named by ``runtime``, else the one claiming its suffix."""
    suffix = path.suffix.lower()
    target: Target | None
    if runtime is not None:
        target = TARGETS.get(runtime)
    else:
        target = next((TARGETS.get(n) for n in TARGETS if suffix in TARGETS.get(n).suffixes), None)
    if target is None:
        known = ", ".join(s for n in TARGETS for s in TARGETS.get(n).suffixes)
        raise PncdError(f"{path}: no runner for {suffix or 'this file'} files; pass a file of a known kind ({known}) "
                        "or a directory written by pncd export")
    return target.runner(path, device, opts)
