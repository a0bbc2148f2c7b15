"""How pncd compiles an OpenVINO model: :func:`compile_model`, the one place that calls
``openvino.Core.compile_model`` (the runner of :mod:`pncd.targets.openvino_rt`, the export's
rounding pass in :mod:`pncd.targets.openvino_build` and sensitivity pass in
:mod:`pncd.export.sensitivity`, the distillation teacher in :mod:`pncd.distill.teacher_runtime`).
``openvino`` is imported when a model is compiled.
"""

from __future__ import annotations

from typing import Any

from pncd.targets.base import require


def compile_config(precision_hint: str | None = None, threads: int | None = None,
                   performance_hint: str | None = "LATENCY") -> dict[str, Any]:
    """The properties pncd compiles an OpenVINO model with: ``PERFORMANCE_HINT`` (None: the
    plugin's), ``INFERENCE_PRECISION_HINT`` (e.g. "f32"; None: the plugin's, bf16 on CPUs with
    BF16), ``INFERENCE_NUM_THREADS`` (None or 0: the plugin's choice)."""
    cfg: dict[str, Any] = {}
    if performance_hint:
        cfg["PERFORMANCE_HINT"] = performance_hint
    if precision_hint:
        cfg["INFERENCE_PRECISION_HINT"] = precision_hint
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    return cfg


def compile_model(model: Any, device: str = "CPU", *, precision_hint: str | None = None, threads: int | None = None,
                  performance_hint: str | None = "LATENCY", core: Any = None) -> Any:
    """``model`` (an ``openvino.Model`` or the path of an IR) compiled for ``device`` with
    :func:`compile_config`'s properties: the one place pncd compiles an OpenVINO model (the
    runner, the export's rounding and sensitivity passes, the distillation teacher). ``core``:
    an ``openvino.Core`` to reuse (default: a new one)."""
    if core is None:
        core = require("openvino", "openvino", "the openvino target").Core()
    return core.compile_model(model, device, compile_config(precision_hint, threads, performance_hint))
