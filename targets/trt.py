"""TensorRT: engine building (Polygraphy's loaders), a runner, and the tensorrt and jetson targets.

How each TensorRT version is asked for a precision, and the builder itself, live in
:mod:`pncd.targets.trt_build` (no pncd imports: the Jetson runner ships it to the device). The
export writes one ONNX per precision (``model.onnx``, ``model_fp16.onnx``, ``model_int8.onnx``
with symmetric INT8 QDQ); target ``tensorrt`` also builds ``model.engine`` where ``tensorrt`` is
importable, target ``jetson`` never does (the bench builds it on the device). ``tensorrt`` and
``polygraphy`` are imported only when used: engines are built and run where TensorRT exists (an
NVIDIA GPU, a Jetson), never on the export machine's CPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pncd.errors import PncdError, RunFailed
from pncd.targets.base import BuildResult, BuildSpec, Runner, RunnerOptions, Target, require
from pncd.targets.trt_build import (
    DEFAULT_MAX_BATCH,
    ONNX_FOR_PRECISION,
    STRONGLY_TYPED_SINCE,
    parse_trt_version,
    trt_build_plan,
    trtexec_command,
)
from pncd.targets.trt_export import build_engine

__all__ = ["DEFAULT_MAX_BATCH", "JETSON", "ONNX_FOR_PRECISION", "STRONGLY_TYPED_SINCE", "TENSORRT", "JetsonTarget",
           "TensorRTRunner", "TensorRTTarget", "build_engine", "parse_trt_version", "trt_build_plan",
           "trtexec_command"]


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
        self._runner: Any = None  # polygraphy TrtRunner and its engine while active
        self._engine: Any = None

    def _activate(self) -> None:
        trt = require("tensorrt", "tensorrt", "the tensorrt target")
        poly = require("polygraphy.backend.trt", "polygraphy", "running TensorRT engines")
        data = self._bytes
        if data is None and self.path is not None:
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


class TensorRTTarget(Target):
    """The ONNX TensorRT consumes (symmetric INT8 QDQ), and ``model.engine`` where TensorRT is here."""

    builds_engine = True

    def build(self, onnx: Path, out_dir: Path, spec: BuildSpec) -> BuildResult:
        from pncd.targets import trt_export as te
        from pncd.targets.onnxrt_build import write_precision_onnx
        from pncd.targets.onnxrt import OnnxRuntimeRunner

        name, build = write_precision_onnx(onnx, out_dir, spec.precision, spec.input_name, spec.calib, spec.calib_method,
                                           spec.keep_float, symmetric=True, prequantized=spec.prequantized,
                                           float_nodes=spec.float_nodes)
        build.update(spec.plan_record)
        info = te.maybe_build_engine(self.builds_engine, out_dir / name, out_dir, spec.precision,
                                     dynamic_shape=spec.input_chw if spec.dynamic_batch else None)
        if info.get("engine_note"):  # e.g. the trtexec command to run where TensorRT is installed
            spec.log(info["engine_note"])
        runners: list[tuple[str, Runner]] = []
        if info.get("engine"):
            runners.append(("tensorrt", TensorRTRunner(out_dir / info["engine"])))
        # ONNX Runtime sums its INT8 products in int32 as TensorRT does, also on CPUs without VNNI
        runners.append(("onnxruntime (the TensorRT ONNX)", OnnxRuntimeRunner(out_dir / name, int32_sums=True)))
        return BuildResult(name, name, build, calibration_method=build.get("calibrate_method", ""), tensorrt=info,
                        parity_runners=runners)

    def runner(self, path: Path, device: str | None, options: RunnerOptions) -> Runner:
        """A bare engine file as it is; an export directory's engine if this TensorRT built it, else
        one built now from the artifact's ONNX. Needs an NVIDIA GPU (device "cuda")."""
        if options.manifest is None and path.suffix.lower() in self.suffixes:
            return TensorRTRunner(path)
        man = options.manifest or {}
        d = options.directory or path.parent
        if (device or "cpu").lower() != "cuda":
            raise PncdError(
                f"{d} is a {man.get('target', self.name)} artifact: TensorRT runs on an NVIDIA GPU (device 'cuda', "
                "or pncd bench --device jetson); to run its ONNX on ONNX Runtime pass runtime='onnxruntime'"
            )
        trt = require("tensorrt", "tensorrt", f"the {man.get('target', self.name)} target")
        info = man.get("tensorrt") or {}
        engine = info.get("engine")
        if engine and (d / engine).is_file() and info.get("built_with") == trt.__version__:
            return TensorRTRunner(d / engine)
        data = build_engine(path, None, options.precision)
        return TensorRTRunner(engine_bytes=data, name=str(path))


class JetsonTarget(TensorRTTarget):
    """The TensorRT ONNX only: ``pncd bench --device jetson`` builds the engine on the device."""

    builds_engine = False


TENSORRT = TensorRTTarget(
    "tensorrt", runtime="tensorrt", package="tensorrt", suffixes=(".engine", ".plan"),
    flags=(("sensitivity", ("int8",)),), plan_backend="ort-symmetric",
    description="TensorRT: FP32 / FP16 / symmetric INT8 QDQ ONNX, engine built where tensorrt is importable")
JETSON = JetsonTarget(
    "jetson", runtime="tensorrt", package="tensorrt", flags=(("sensitivity", ("int8",)),), plan_backend="ort-symmetric",
    description="NVIDIA Jetson: the TensorRT ONNX only; pncd bench builds the engine on the device")
