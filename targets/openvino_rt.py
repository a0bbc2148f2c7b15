"""The openvino target (IR, NNCF INT8) and its runner: a compiled IR (``model.xml`` + ``model.bin``) on an OpenVINO device.

``openvino`` is imported when the runner is activated. On CPUs with BF16 support the CPU plugin
computes in bf16 unless told otherwise, so FP32 artifacts are run with
``INFERENCE_PRECISION_HINT = "f32"`` (OpenVINO's precision control:
https://docs.openvino.ai/2025/openvino-workflow/running-inference/optimize-inference/precision-control.html);
``settings["inference_precision"]`` reports what the plugin actually uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pncd.errors import PncdError
from pncd.targets.base import BuildResult, BuildSpec, Runner, RunnerOptions, Target, require
from pncd.targets.openvino_core import compile_config, compile_model

__all__ = ["TARGET", "OpenVinoRunner", "OpenVinoTarget", "compile_config", "compile_model", "ov_device"]


class OpenVinoRunner(Runner):
    """Run an OpenVINO IR with one synchronous infer request (latency mode).

    ``precision_hint``: "f32" for FP32 artifacts, None to leave the plugin's default;
    ``threads``: ``INFERENCE_NUM_THREADS`` (default: the plugin's choice).
    """

    name = "openvino"

    def __init__(
        self,
        xml_path: str | os.PathLike,
        device: str = "CPU",
        precision_hint: str | None = None,
        threads: int | None = None,
        performance_hint: str = "LATENCY",
    ) -> None:
        super().__init__()
        self.path = Path(xml_path)
        self.device = device
        self.precision_hint = precision_hint
        self.threads = threads
        self.performance_hint = performance_hint
        self.compiled: Any = None  # openvino.CompiledModel, InferRequest and Core while active
        self._request: Any = None
        self._core: Any = None

    def config(self, performance_hint: str | None = None) -> dict[str, Any]:
        """The compile-time properties this runner passes to OpenVINO."""
        return compile_config(self.precision_hint, self.threads, performance_hint or self.performance_hint)

    def _compile(self, performance_hint: str | None = None):
        ov = require("openvino", "openvino", "the openvino target")
        if not self.path.is_file():
            raise PncdError(f"{self.path}: OpenVINO IR not found")
        if self._core is None:
            self._core = ov.Core()
        base = self.device.split(".")[0].split(":")[0]
        available = self._core.available_devices
        if base not in ("AUTO", "HETERO", "MULTI") and not any(d.split(".")[0] == base for d in available):
            raise PncdError(f"OpenVINO device {self.device!r} is not available here (available: {available})")
        try:
            return compile_model(str(self.path), self.device, precision_hint=self.precision_hint, threads=self.threads,
                                 performance_hint=performance_hint or self.performance_hint, core=self._core)
        except RuntimeError as e:
            raise PncdError(f"{self.path}: OpenVINO could not compile it for {self.device} "
                            f"({str(e).strip().splitlines()[0][:300]})") from None

    def _activate(self) -> None:
        self.compiled = self._compile()
        self._request = self.compiled.create_infer_request()

    def throughput(self, feed: dict[str, np.ndarray], count: int = 100, warmup: int = 8) -> dict[str, Any]:
        """OpenVINO's throughput mode, as benchmark_app measures it: the model compiled again with
        ``PERFORMANCE_HINT=THROUGHPUT`` (this runner's precision and threads) and ``count``
        batch-1 inferences kept in flight on its optimal number of asynchronous requests
        (``AsyncInferQueue``). Returns images per second and the number of requests."""
        import time

        ov = require("openvino", "openvino", "the openvino target")
        compiled = self._compile("THROUGHPUT")
        queue = ov.AsyncInferQueue(compiled, 0)  # 0: the plugin's optimal number of requests
        for _ in range(warmup):
            queue.start_async(feed)
        queue.wait_all()
        t0 = time.perf_counter()
        for _ in range(count):
            queue.start_async(feed)
        queue.wait_all()
        seconds = time.perf_counter() - t0
        batch = int(next(iter(feed.values())).shape[0])
        return {"throughput_ips": count * batch / seconds if seconds > 0 else None, "requests": len(queue),
                "count": count, "seconds": seconds}

    def profile(self, feed: dict[str, np.ndarray], runs: int = 20, warmup: int = 5) -> dict[str, Any]:
        """Per-node times from OpenVINO's own profiler (``PERF_COUNT``, ``InferRequest.get_profiling_info()``):
        the model compiled again with this runner's settings, on a Core of its own with PERF_COUNT on
        (the runner's compiled model, the one timed, never profiles); ``warmup`` inferences, then
        ``runs`` profiled ones. Returns a raw profile (:mod:`pncd.targets.profiling`): each executed
        node with its exec type (e.g. ``brgconv_avx512_1x1_I8``) and the layers fused into it."""
        import time

        from pncd.targets.profiling import ov_node, per_run

        ov = require("openvino", "openvino", "the openvino target")
        if not self.path.is_file():
            raise PncdError(f"{self.path}: OpenVINO IR not found")
        core = ov.Core()
        core.set_property(self.device.split(".")[0].split(":")[0], {"PERF_COUNT": True})
        try:
            compiled = compile_model(str(self.path), self.device, precision_hint=self.precision_hint,
                                     threads=self.threads, performance_hint=self.performance_hint, core=core)
        except RuntimeError as e:
            raise PncdError(f"{self.path}: OpenVINO could not compile it for {self.device} "
                            f"({str(e).strip().splitlines()[0][:300]})") from None
        request = compiled.create_infer_request()
        types = {op.get_friendly_name(): op.get_type_name() for op in core.read_model(str(self.path)).get_ops()}
        fused: dict[str, tuple[list[str], str | None]] = {}
        for op in compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
            outs = info["outputPrecisions"].astype(str) if "outputPrecisions" in info else None
            fused[op.get_friendly_name()] = ([types.get(n.strip(), "") for n in names.split(",") if n.strip()], outs)
        times: dict[str, list[float]] = {}
        seen: dict[str, tuple[str, str]] = {}
        wall = []
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            request.infer(feed)
            wall.append((time.perf_counter() - t0) * 1e3)
            if i < warmup:
                continue
            for info in request.get_profiling_info():
                if info.status == info.Status.EXECUTED:
                    times.setdefault(info.node_name, []).append(info.real_time.total_seconds() * 1e3)
                    seen.setdefault(info.node_name, (info.node_type, info.exec_type))
        stats = per_run(times, runs)
        nodes = [{**ov_node(name, *seen[name], *fused.get(name, ([], None))), **stats[name]} for name in times]
        return {"runtime": "openvino", "profiler": "OpenVINO PERF_COUNT (InferRequest.get_profiling_info)",
                "runs": runs, "warmup": warmup, "wall_ms": wall[warmup:], "nodes": nodes, "device": self.device,
                "config": self.config()}

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self._request.infer(feed)
        # The request reuses its output tensors: copy before the next call overwrites them.
        return {_name(o, i): np.array(res[o], copy=True) for i, o in enumerate(self.compiled.outputs)}

    def _deactivate(self) -> None:
        self._request = None
        self.compiled = None

    def input_names(self) -> list[str]:
        if self.compiled is not None:
            return [_name(p, i) for i, p in enumerate(self.compiled.inputs)]
        ov = require("openvino", "openvino", "the openvino target")
        model = ov.Core().read_model(str(self.path))
        return [_name(p, i) for i, p in enumerate(model.inputs)]

    def inference_precision(self) -> str | None:
        """The precision the plugin computes in (e.g. "f32", "bf16"), once active."""
        if self.compiled is None:
            return None
        try:
            t = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        except RuntimeError:  # devices without the property
            return None
        return t.to_string() if hasattr(t, "to_string") else str(t)  # ov.Type -> "f32", "bf16", ...

    @property
    def settings(self) -> dict[str, Any]:
        import importlib.metadata as md

        try:
            version = md.version("openvino")
        except md.PackageNotFoundError:
            version = None
        return {"runner": type(self).__name__, "runtime": "openvino", "version": version, "file": self.path.name,
                "device": self.device, "config": self.config(), "inference_precision": self.inference_precision()}


def _name(port: Any, index: int) -> str:
    try:
        return port.get_any_name()
    except RuntimeError:  # an unnamed port
        return f"output{index}"


def ov_device(device: str | None) -> str:
    """OpenVINO's device name for ``device`` ("cpu" -> "CPU"; "cuda" is refused)."""
    d = (device or "cpu").strip()
    if d.lower() == "cuda":
        raise PncdError("OpenVINO does not run on CUDA devices; use device 'cpu' (or an OpenVINO name: GPU, NPU, AUTO)")
    return d.upper()


class OpenVinoTarget(Target):
    """OpenVINO IR: FP32, FP16 weights, INT8 by NNCF post-training quantization."""

    def require(self, precision: str) -> None:
        require("openvino", "openvino", "the openvino target")
        if precision == "int8":
            require("nncf", "nncf", "OpenVINO INT8 quantization")

    def build(self, onnx: Path, out_dir: Path, spec: BuildSpec) -> BuildResult:
        from pncd.targets.openvino_build import convert
        from pncd.targets.cpu import resolve_inference_precision

        xml = out_dir / "model.xml"
        hint = resolve_inference_precision(spec.inference_precision, spec.precision, "CPU")
        build = convert(onnx, xml, spec.precision, spec.input_name, calib=spec.calib, method=spec.calib_method,
                        accuracy_control=spec.accuracy_control, validation=spec.validation,
                        max_drop=spec.max_dice_drop, num_classes=spec.num_classes,
                        keep_float=spec.keep_float, preset=spec.ov_preset, prequantized=spec.prequantized,
                        float_nodes=spec.float_nodes, portable=spec.portable, rounding=spec.ov_rounding)
        build.update(spec.plan_record)
        build["parity_config"] = {"device": "CPU", "INFERENCE_PRECISION_HINT": hint}
        return BuildResult("model.xml", None, build,
                        calibration_method=f"nncf {build.get('nncf_range_estimator', '')}".strip(),
                        parity_runners=[(self.name, OpenVinoRunner(xml, device="CPU", precision_hint=hint))])

    def runner(self, path: Path, device: str | None, options: RunnerOptions) -> Runner:
        from pncd.targets.cpu import resolve_inference_precision

        hint = resolve_inference_precision(options.inference_precision, options.precision, ov_device(device))
        return OpenVinoRunner(path, device=ov_device(device), precision_hint=hint, threads=options.threads)


TARGET = OpenVinoTarget(
    "openvino", runtime="openvino", package="openvino", suffixes=(".xml",),
    flags=(("accuracy_control", ("int8",)), ("ac_images", ("int8",)), ("ov_preset", ("int8",)), ("ov_rounding", ("int8",)),
           ("int8_cpu", ("int8",)), ("sensitivity", ("int8",)), ("inference_precision", ("fp32", "fp16", "int8"))),
    plan_backend="openvino",
    description="OpenVINO IR: FP32, FP16 weights, INT8 (NNCF post-training quantization)")
