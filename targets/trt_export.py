"""The TensorRT and Jetson targets: the ONNX TensorRT consumes, and an engine where possible.

One ONNX per precision (see :mod:`pncd.targets.trt` for why one file serves both weakly
and strongly typed networks): FP32 as exported, FP16 converted with FP32 input/output, INT8 as
a QDQ graph with symmetric signed INT8 activations and weights (TensorRT's explicit
quantization), calibrated on training images. ``--target tensorrt`` also builds
``model.engine`` when ``tensorrt`` is importable (an NVIDIA machine); ``--target jetson`` never
does: an engine only runs on the TensorRT version and GPU that built it, so the bench stage
builds it on the device. The manifest records the build plan for the installed TensorRT and for
the JetPack releases in :data:`KNOWN_RELEASES`, so the device side can be checked against it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import os

from pncd.errors import PncdError, RunFailed
from pncd.targets.base import require
from pncd.targets.trt_build import DEFAULT_MAX_BATCH, build_engine_bytes, trt_build_plan, trtexec_command

KNOWN_RELEASES = {"10.3": "JetPack 6.x", "10.16": "JetPack 7.2"}
ENGINE = "model.engine"


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def plans(precision: str) -> dict[str, Any]:
    """Build plans for the JetPack releases we know and the installed TensorRT (if any)."""
    out: dict[str, Any] = {f"{v} ({what})": trt_build_plan(v, precision) for v, what in KNOWN_RELEASES.items()}
    if tensorrt_available():
        import tensorrt as trt

        out[f"{trt.__version__} (installed)"] = trt_build_plan(trt.__version__, precision)
    return out


def maybe_build_engine(build: bool, onnx_path: Path, out_dir: Path, precision: str,
                       dynamic_shape: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """Build ``model.engine`` (``build``: target tensorrt) where TensorRT is importable; say why not otherwise.

    ``info["trtexec"]``: for each known TensorRT release, the command that builds the engine on
    the NVIDIA machine; ``dynamic_shape`` (C, H, W) when the export has a dynamic batch axis.
    """
    info: dict[str, Any] = {"plans": plans(precision), "engine": None, "built_with": None}
    info["trtexec"] = {release: trtexec_command(plan, onnx_path.name, dynamic_shape=dynamic_shape)
                       for release, plan in info["plans"].items()}
    if not build:  # target jetson
        info["engine_note"] = "built on the device by pncd bench (engines are tied to their TensorRT and GPU)"
        return info
    if not tensorrt_available():
        commands = "; ".join(f"{cmd}  (TensorRT {release})" for release, cmd in info["trtexec"].items())
        info["engine_note"] = ("no engine built: tensorrt is not installed here; on the NVIDIA machine run: "
                               + commands)
        return info
    import tensorrt as trt

    build_engine(onnx_path, out_dir / ENGINE, precision)
    info.update(engine=ENGINE, built_with=trt.__version__, engine_note=None)
    return info


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike | None,
    precision: str,
    workspace_mb: int = 1024,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> bytes:
    """Build a serialized engine from the export's ONNX with the installed TensorRT.

    :func:`pncd.targets.trt_build.build_engine_bytes` (Polygraphy's loaders) with the plan of
    the installed version; writes ``engine_path`` atomically when given; returns the bytes.
    """
    trt = require("tensorrt", "tensorrt", "building TensorRT engines")
    poly = require("polygraphy.backend.trt", "polygraphy", "building TensorRT engines")
    logger = require("polygraphy.logger", "polygraphy", "building TensorRT engines").G_LOGGER
    try:
        with logger.verbosity(logger.WARNING):  # Polygraphy logs to stdout; warnings and errors only
            data, _ = build_engine_bytes(str(onnx_path), precision, trt, poly, max_batch, workspace_mb)
    except PncdError:
        raise
    except Exception as e:  # PolygraphyException: its log above says why
        detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise RunFailed(f"{onnx_path}: TensorRT {trt.__version__} could not build a {precision} engine "
                        f"({detail})") from None
    if engine_path is not None:
        from pncd.io import atomic_path

        with atomic_path(engine_path) as tmp:
            tmp.write_bytes(data)
    return data
