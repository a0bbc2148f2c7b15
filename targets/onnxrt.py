"""The onnxruntime target: ONNX files (FP32, FP16, INT8 QDQ) and their runner, one ``InferenceSession``.

``onnxruntime`` is imported when the runner is activated, so pncd imports without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pncd.errors import PncdError
from pncd.targets.base import BuildResult, BuildSpec, Runner, RunnerOptions, Target, require


X64_QUANT_PRECISION = "session.x64quantprecision"  # ONNX Runtime's session config key (see OnnxRuntimeRunner)


class OnnxRuntimeRunner(Runner):
    """Run an ONNX file on ONNX Runtime.

    ``providers``: execution providers in priority order (default CPU only);
    ``threads``: intra-op threads (default: ONNX Runtime's choice, one per physical core).
    Graph optimisations are fully enabled, as a deployment would run them.

    ``int32_sums``: INT8 products summed in int32 on every x86 CPU, as TensorRT sums them
    (ONNX Runtime's ``session.x64quantprecision``: on CPUs without VNNI its u8 x u8 kernels, where
    the default u8 x s8 ones add pairs of products in int16, which 8-bit weights saturate; CPUs
    with VNNI sum in int32 either way). For TensorRT's symmetric INT8 QDQ ONNX, whose 8-bit
    weights are made for a GPU: run by default on an AVX2 CPU it kept 97.7% of a MobileNetV2's
    validation Dice, with this option 99.4%.
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None,
                 int32_sums: bool = False) -> None:
        super().__init__()
        self.int32_sums = int32_sums
        self.path = Path(path)
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.threads = threads
        self.session: Any = None  # an onnxruntime.InferenceSession while active
        self.optimization = "ORT_ENABLE_ALL"  # the graph optimisation level the session got
        self._outputs: list[str] = []

    def _activate(self) -> None:
        ort = require("onnxruntime", "onnxruntime", "the onnxruntime target")
        if not self.path.is_file():
            raise PncdError(f"{self.path}: ONNX file not found")
        available = ort.get_available_providers()
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise PncdError(
                f"ONNX Runtime here lacks {missing} (available: {available}); install the matching "
                "onnxruntime package (e.g. onnxruntime-gpu for CUDA) or run on the CPU"
            )
        self.session = self._session(ort, ort.SessionOptions())
        self._outputs = [o.name for o in self.session.get_outputs()]

    def _session(self, ort: Any, so: Any) -> Any:
        """An InferenceSession of this runner's file with its settings on top of ``so``."""
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only: the runner's caller reports what matters
        if self.int32_sums:
            so.add_session_config_entry(X64_QUANT_PRECISION, "1")
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        try:
            return ort.InferenceSession(str(self.path), sess_options=so, providers=self.providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            first = e
        if self.int32_sums:
            # ONNX Runtime 1.32's extended optimisations (QDQ -> QLinearConv fusion) can fail to
            # initialise under x64quantprecision (FANet: "AddInitializerWithOrtValue"). The basic level
            # keeps the QDQ graph as written: each convolution computes on the dequantized int8 values
            # in float, which sums the same int8 products without int16 saturation, as TensorRT does.
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            try:
                session = ort.InferenceSession(str(self.path), sess_options=so, providers=self.providers)
                self.optimization = "ORT_ENABLE_BASIC (ORT_ENABLE_ALL failed to load under int32 sums)"
                return session
            except Exception:
                pass
        raise PncdError(f"{self.path}: ONNX Runtime could not load it ({str(first).splitlines()[0][:300]})") from None

    def profile(self, feed: dict[str, np.ndarray], runs: int = 20, warmup: int = 5) -> dict[str, Any]:
        """Per-node times from ONNX Runtime's own profiler (``SessionOptions.enable_profiling``), in a
        session of its own with this runner's settings: ``warmup`` runs, then ``runs`` profiled ones.
        The runner's own session (the one timed) never profiles. Returns a raw profile
        (:mod:`pncd.targets.profiling`); the JSON trace is read and deleted."""
        import json
        import tempfile
        import time

        from pncd.targets.profiling import ort_trace_nodes

        ort = require("onnxruntime", "onnxruntime", "the onnxruntime target")
        if not self.path.is_file():
            raise PncdError(f"{self.path}: ONNX file not found")
        with tempfile.TemporaryDirectory(prefix="pncd-ort-profile-") as tmp:
            so = ort.SessionOptions()
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "ort")
            session = self._session(ort, so)
            wall = []
            for _ in range(warmup + runs):
                t0 = time.perf_counter()
                session.run(None, feed)
                wall.append((time.perf_counter() - t0) * 1e3)
            trace = Path(session.end_profiling())
            events = json.loads(trace.read_text())
        nodes, _ = ort_trace_nodes(events, runs)
        return {"runtime": "onnxruntime", "profiler": "ONNX Runtime SessionOptions.enable_profiling (JSON trace)",
                "runs": runs, "warmup": warmup, "wall_ms": wall[warmup:], "nodes": nodes,
                "providers": session.get_providers()}

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self._outputs, feed)
        return dict(zip(self._outputs, outs))

    def _deactivate(self) -> None:
        self.session = None

    def input_names(self) -> list[str]:
        return list(self.input_metadata())

    def input_metadata(self) -> dict[str, dict[str, Any]]:
        """``{name: {"shape": [...], "dtype": ...}}``; a dynamic dimension is its name (e.g. "batch")."""
        if self.session is not None:
            return {i.name: {"shape": list(i.shape), "dtype": i.type} for i in self.session.get_inputs()}
        import onnx

        m = onnx.load(str(self.path), load_external_data=False)
        inits = {t.name for t in m.graph.initializer}
        out = {}
        for i in m.graph.input:
            if i.name in inits:
                continue
            dims = [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            out[i.name] = {"shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name}
        return out

    @property
    def settings(self) -> dict[str, Any]:
        import importlib.metadata as md

        version: str | None
        try:
            version = md.version("onnxruntime")
        except md.PackageNotFoundError:  # e.g. onnxruntime-gpu
            version = getattr(__import__("onnxruntime"), "__version__", None)
        used = self.session.get_providers() if self.session is not None else self.providers
        return {"runner": type(self).__name__, "runtime": "onnxruntime", "version": version, "file": self.path.name,
                "providers": used, "threads": self.threads, "graph_optimization": self.optimization,
                **({X64_QUANT_PRECISION: "1 (INT8 sums in int32 on CPUs without VNNI, as TensorRT's)"}
                   if self.int32_sums else {})}


def ort_providers(device: str | None) -> list[str]:
    """ONNX Runtime execution providers for ``device`` ("cpu" or "cuda")."""
    d = (device or "cpu").lower()
    if d == "cpu":
        return ["CPUExecutionProvider"]
    if d == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise PncdError(f"device {device!r} is not one ONNX Runtime takes here; use 'cpu' or 'cuda'")


class OnnxRuntimeTarget(Target):
    """FP32 as exported, FP16 (onnxconverter-common), INT8 QDQ with asymmetric activations."""

    def build(self, onnx: Path, out_dir: Path, spec: BuildSpec) -> BuildResult:
        from pncd.targets.onnxrt_build import write_precision_onnx

        name, build = write_precision_onnx(onnx, out_dir, spec.precision, spec.input_name, spec.calib,
                                           spec.calib_method, spec.keep_float, symmetric=False,
                                           prequantized=spec.prequantized, float_nodes=spec.float_nodes,
                                           reduce_range=spec.portable)
        build.update(spec.plan_record)
        return BuildResult(name, name, build, calibration_method=build.get("calibrate_method", ""),
                        parity_runners=[(self.name, OnnxRuntimeRunner(out_dir / name))])

    def runner(self, path: Path, device: str | None, options: RunnerOptions) -> Runner:
        """``path`` on ONNX Runtime; a TensorRT/Jetson artifact's INT8 ONNX with TensorRT's int32 sums."""
        man = options.manifest or {}
        for_tensorrt = man.get("runtime") == "tensorrt" and options.precision == "int8"
        return OnnxRuntimeRunner(path, providers=ort_providers(device), threads=options.threads,
                                 int32_sums=for_tensorrt)


TARGET = OnnxRuntimeTarget(
    "onnxruntime", runtime="onnxruntime", package="onnxruntime", suffixes=(".onnx",),
    flags=(("int8_cpu", ("int8",)), ("sensitivity", ("int8",))), plan_backend="ort",
    description="ONNX Runtime: FP32, FP16 (onnxconverter-common), INT8 QDQ (static calibration)")
