"""Export targets, their precisions, and ``load_runner``: the API the bench stage uses.

Targets and precisions
    ``TARGETS`` is a :class:`pncd.registry.Registry` of :class:`TargetSpec`; every target
    takes ``fp32``, ``fp16`` and ``int8``. :func:`valid_pairs` lists the (target, precision)
    pairs and :func:`check_pair` turns a bad pair into a one-line :class:`PncdError` that lists
    the valid ones.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pncd.errors import PncdError
from pncd.registry import Registry

PRECISIONS = ("fp32", "fp16", "int8")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TargetSpec:
    """One export target: which precisions it takes and which package its runtime needs."""

    name: str
    precisions: tuple[str, ...]
    runtime: str  # the runner that runs the main artifact
    package: str  # pip package of that runtime
    description: str
    builds_engine: bool = False
    extra_packages: tuple[str, ...] = field(default=())


TARGETS: Registry[TargetSpec] = Registry("target")


def _add(spec: TargetSpec) -> None:
    TARGETS.register(spec.name, precisions=spec.precisions)(spec)


_add(TargetSpec("onnxruntime", PRECISIONS, "onnxruntime", "onnxruntime",
                "ONNX Runtime: FP32, FP16 (onnxconverter-common), INT8 QDQ (static calibration)"))
_add(TargetSpec("openvino", PRECISIONS, "openvino", "openvino",
                "OpenVINO IR: FP32, FP16 weights, INT8 (NNCF post-training quantization)",
                extra_packages=("nncf",)))
_add(TargetSpec("tensorrt", PRECISIONS, "tensorrt", "tensorrt",
                "TensorRT: FP32 / FP16 / symmetric INT8 QDQ ONNX, engine built where tensorrt is importable",
                builds_engine=True))
_add(TargetSpec("jetson", PRECISIONS, "tensorrt", "tensorrt",
                "NVIDIA Jetson: the TensorRT ONNX only; pncd bench builds the engine on the device"))


def valid_pairs() -> list[tuple[str, str]]:
    """Every (target, precision) pair ``pncd export`` accepts."""
    return [(t, p) for t in TARGETS for p in TARGETS.get(t).precisions]


def check_pair(target: str, precision: str) -> TargetSpec:
    """The target's spec, or a PncdError listing the valid target/precision pairs."""
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


def ov_device(device: str | None) -> str:
    """OpenVINO's device name for ``device`` ("cpu" -> "CPU"; "cuda" is refused)."""
    d = (device or "cpu").strip()
    if d.lower() == "cuda":
        raise PncdError("OpenVINO does not run on CUDA devices; use device 'cpu' (or an OpenVINO name: GPU, NPU, AUTO)")
    return d.upper()


def ort_providers(device: str | None) -> list[str]:
    """ONNX Runtime execution providers for ``device`` ("cpu" or "cuda")."""
    d = (device or "cpu").lower()
    if d == "cpu":
        return ["CPUExecutionProvider"]
    if d == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise PncdError(f"device {device!r} is not one ONNX Runtime takes here; use 'cpu' or 'cuda'")


def load_runner(
    artifact: str | os.PathLike,
    device: str | None = "cpu",
    runtime: str | None = None,
    threads: int | None = None,
    inference_precision: str | None = None,
):
    """An inactive runner for an exported artifact (see the module docstring).

    ``inference_precision`` (OpenVINO): auto|f32|f16|bf16; None = what the artifact was
    exported and checked with (its manifest), else auto.

    ``runtime`` overrides the manifest's runtime: "onnxruntime" runs a TensorRT/Jetson
    artifact's ONNX on ONNX Runtime (or an OpenVINO artifact's ONNX, when present).
    """
    path = Path(artifact)
    manifest_path = find_manifest(path)
    if manifest_path is None:
        if path.is_file():
            return _runner_for_file(path, device, runtime, threads, precision=None,
                                    inference_precision=inference_precision)
        raise PncdError(f"{path}: not an exported artifact (no {MANIFEST}); pass a directory written by pncd export")
    man = read_manifest(manifest_path)
    d = manifest_path.parent
    target, precision = man["target"], man["precision"]
    runtime = runtime or man.get("runtime") or check_pair(target, precision).runtime
    main = d / man["artifact"]
    if not main.is_file():
        raise PncdError(f"{main}: listed in {manifest_path} but missing; re-export the artifact")
    if runtime == "tensorrt":
        return _tensorrt_runner(d, man, device)
    if runtime == "onnxruntime" and main.suffix != ".onnx":
        onnx = man.get("onnx")
        if not onnx or not (d / onnx).is_file():
            raise PncdError(f"{d}: this {target} artifact has no ONNX file for ONNX Runtime; re-export it")
        main = d / onnx
    recorded = (man.get("inference_precision") or {}).get("requested")
    return _runner_for_file(main, device, runtime, threads, precision=precision,
                            inference_precision=inference_precision or recorded)


def _runner_for_file(path: Path, device: str | None, runtime: str | None, threads: int | None,
                     precision: str | None, inference_precision: str | None = None):
    suffix = path.suffix.lower()
    runtime = runtime or {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt"}.get(suffix)
    if runtime == "onnxruntime":
        from pncd.targets.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, providers=ort_providers(device), threads=threads)
    if runtime == "openvino":
        from pncd.targets.openvino_rt import OpenVinoRunner

        from pncd.targets.cpu import resolve_inference_precision

        hint = resolve_inference_precision(inference_precision, precision or "fp32", ov_device(device))
        return OpenVinoRunner(path, device=ov_device(device), precision_hint=hint, threads=threads)
    if runtime == "tensorrt":
        from pncd.targets.trt import TensorRTRunner

        return TensorRTRunner(path)
    raise PncdError(f"{path}: no runner for {suffix or 'this file'} files; pass a .onnx, .xml or .engine file "
                    "or a directory written by pncd export")


def _tensorrt_runner(d: Path, man: dict[str, Any], device: str | None):
    """TensorRT needs a GPU: the directory's engine if this TensorRT built it, else one built now."""
    from pncd.targets import trt as trt_target
    from pncd.targets.base import require

    if (device or "cpu").lower() != "cuda":
        raise PncdError(
            f"{d} is a {man['target']} artifact: TensorRT runs on an NVIDIA GPU (device 'cuda', or "
            "pncd bench --device jetson); to run its ONNX on ONNX Runtime pass runtime='onnxruntime'"
        )
    trt = require("tensorrt", "tensorrt", f"the {man['target']} target")
    info = man.get("tensorrt") or {}
    engine = info.get("engine")
    if engine and (d / engine).is_file() and info.get("built_with") == trt.__version__:
        return trt_target.TensorRTRunner(d / engine)
    onnx = d / man["artifact"]
    data = trt_target.build_engine(onnx, None, man["precision"])
    return trt_target.TensorRTRunner(engine_bytes=data, name=str(onnx))
