"""TensorRT: which network type and builder flags each version needs, engine building, a runner.

TensorRT changed how precision is asked for (REFERENCE.md section 5):

- 10.0 - 10.11 (JetPack 6 ships 10.3): *weakly typed* networks. FP16 and INT8 are builder
  flags (``BuilderFlag.FP16`` / ``BuilderFlag.INT8``); INT8 scales come from the QDQ nodes of
  the ONNX (explicit quantization, no calibrator), FP16 is allowed alongside INT8 for the
  layers left unquantized.
- 10.12 and later, and 11.x (where the flags and weakly typed networks are gone): *strongly
  typed* networks (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``); the precision is the
  ONNX's own: FP16 weights and casts, QDQ nodes for INT8. No precision flags.

Either way the export writes one ONNX per precision (``model.onnx``, ``model_fp16.onnx``,
``model_int8.onnx`` with symmetric INT8 QDQ), which both kinds of network accept, and
:func:`trt_build_plan` says how to build it for the TensorRT at hand. ``tensorrt`` (and, for
the runner, ``polygraphy``) are imported only when used: engines are built and run where
TensorRT exists (an NVIDIA GPU, a Jetson), never on the export machine's CPU.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from pncd.errors import PncdError, RunFailed
from pncd.targets.base import Runner, require

ONNX_FOR_PRECISION = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx"}
STRONGLY_TYPED_SINCE = (10, 12)
DEFAULT_MAX_BATCH = 32


def parse_trt_version(version: str) -> tuple[int, int, int]:
    """``"10.3.0.30"`` -> ``(10, 3, 0)``; a string that is not a version is a PncdError."""
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not m:
        raise PncdError(f"TensorRT version {version!r} is not a version number like 10.3.0")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def trt_build_plan(version: str, precision: str) -> dict[str, Any]:
    """How to build an engine of ``precision`` with TensorRT ``version`` (a pure function).

    Returns ``{"tensorrt", "precision", "strongly_typed", "network", "builder_flags", "onnx",
    "int8_source"}``: the network kind, the ``BuilderFlag`` names to set and the ONNX file of
    the export to parse.
    """
    if precision not in ONNX_FOR_PRECISION:
        raise PncdError(f"precision {precision!r} is unknown; use one of {', '.join(ONNX_FOR_PRECISION)}")
    major, minor, patch = parse_trt_version(version)
    if major < 10:
        raise PncdError(
            f"TensorRT {version} is too old: pncd builds engines with TensorRT 10.x or 11.x "
            "(JetPack 6 ships 10.3); upgrade TensorRT / JetPack"
        )
    strong = (major, minor) >= STRONGLY_TYPED_SINCE
    flags: list[str] = []
    if not strong:
        if precision == "fp16":
            flags = ["FP16"]
        elif precision == "int8":
            flags = ["INT8", "FP16"]
    return {
        "tensorrt": f"{major}.{minor}.{patch}",
        "precision": precision,
        "strongly_typed": strong,
        "network": "strongly typed" if strong else "weakly typed",
        "builder_flags": flags,
        "onnx": ONNX_FOR_PRECISION[precision],
        "int8_source": "QDQ nodes in the ONNX (symmetric INT8)" if precision == "int8" else None,
    }


def trtexec_command(plan: dict[str, Any], onnx: str, engine: str = "model.engine",
                    dynamic_shape: tuple[int, int, int] | None = None, max_batch: int = 8) -> str:
    """The trtexec command line that builds ``plan``'s engine from ``onnx`` (a pure function).

    ``dynamic_shape`` (channels, height, width): the export has a dynamic batch axis, so the
    optimisation profile is given (batch 1 to ``max_batch``, optimised for 1).
    """
    parts = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}"]
    if plan["strongly_typed"]:
        parts.append("--stronglyTyped")
    else:
        parts += [f"--{flag.lower()}" for flag in plan["builder_flags"]]
    if dynamic_shape is not None:
        c, h, w = dynamic_shape
        parts += [f"--minShapes=image:1x{c}x{h}x{w}", f"--optShapes=image:1x{c}x{h}x{w}",
                  f"--maxShapes=image:{max_batch}x{c}x{h}x{w}"]
    return " ".join(parts)


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike | None,
    precision: str,
    workspace_mb: int = 1024,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> bytes:
    """Build a serialized engine from the export's ONNX with the installed TensorRT.

    Follows :func:`trt_build_plan` for the installed version; a dynamic batch gets one
    optimisation profile (1 / 1 / ``max_batch``). Writes ``engine_path`` atomically when given;
    returns the engine's bytes.
    """
    trt = require("tensorrt", "tensorrt", "building TensorRT engines")
    plan = trt_build_plan(trt.__version__, precision)
    onnx_path = Path(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan["strongly_typed"]:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RunFailed(f"{onnx_path}: TensorRT {trt.__version__} could not parse it ({errors[:300]})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for name in plan["builder_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, name))
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    if shape and shape[0] == -1:
        profile = builder.create_optimization_profile()
        rest = shape[1:]
        profile.set_shape(inp.name, (1, *rest), (1, *rest), (int(max_batch), *rest))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RunFailed(f"{onnx_path}: TensorRT {trt.__version__} failed to build a {precision} engine "
                        "(see the TensorRT log above)")
    data = bytes(serialized)
    if engine_path is not None:
        from pncd.io import atomic_path

        with atomic_path(engine_path) as tmp:
            tmp.write_bytes(data)
    return data


class TensorRTRunner(Runner):
    """Run a serialized TensorRT engine through Polygraphy's ``TrtRunner`` (host numpy in/out).

    Give ``engine_path`` (a ``.engine`` file) or ``engine_bytes``. An engine only runs on the
    TensorRT version and GPU that built it.
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike | None = None, engine_bytes: bytes | None = None,
                 name: str | None = None) -> None:
        super().__init__()
        if engine_path is None and engine_bytes is None:
            raise ValueError("TensorRTRunner needs engine_path or engine_bytes")
        self.path = Path(engine_path) if engine_path is not None else None
        self._bytes = engine_bytes
        self.label = name or (self.path.name if self.path else "engine")
        self._runner = None
        self._engine = None

    def _activate(self) -> None:
        trt = require("tensorrt", "tensorrt", "the tensorrt target")
        poly = require("polygraphy.backend.trt", "polygraphy", "running TensorRT engines")
        data = self._bytes
        if data is None:
            if not self.path.is_file():
                raise PncdError(f"{self.path}: TensorRT engine not found")
            data = self.path.read_bytes()
        try:
            self._engine = poly.EngineFromBytes(data)()
        except Exception as e:
            self._engine = None
            detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise PncdError(f"{self.label}: TensorRT {trt.__version__} could not load the engine ({detail}); "
                            "engines only run on the TensorRT version and GPU that built them: rebuild it here") from None
        self._runner = poly.TrtRunner(self._engine)
        self._runner.activate()

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._runner.infer(feed)
        return {k: np.array(v, copy=True) for k, v in out.items()}

    def _deactivate(self) -> None:
        if self._runner is not None:
            self._runner.deactivate()
        self._runner = None
        self._engine = None

    def input_names(self) -> list[str]:
        if self._engine is None:
            raise RuntimeError("TensorRTRunner: activate() before input_names() (the engine holds the names)")
        trt = require("tensorrt", "tensorrt", "the tensorrt target")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        return [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]

    @property
    def settings(self) -> dict[str, Any]:
        try:
            import tensorrt as trt

            version = trt.__version__
        except ImportError:
            version = None
        return {"runner": type(self).__name__, "runtime": "tensorrt", "version": version, "engine": self.label}
