"""TensorRT build plans and the one engine builder (Polygraphy's loaders), for the host and the device.

TensorRT changed how precision is asked for (NVIDIA's 10.x to 11.x migration guide:
https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html):

- 10.0 - 10.11 (JetPack 6 ships 10.3): *weakly typed* networks. FP16 and INT8 are builder
  flags; INT8 scales come from the QDQ nodes of the ONNX (explicit quantization, no
  calibrator), FP16 is allowed alongside INT8 for the layers left unquantized.
- 10.12 and later, and 11.x (where the flags and weakly typed networks are gone): *strongly
  typed* networks; the precision is the ONNX's own (FP16 weights and casts, QDQ nodes for
  INT8). No precision flags.

Either way the export writes one ONNX per precision, which both kinds of network accept, and
:func:`trt_build_plan` says how to build it for the TensorRT at hand; :func:`build_engine_bytes`
builds it with Polygraphy (``NetworkFromOnnxPath(strongly_typed=...)``, ``CreateConfig``,
``EngineBytesFromNetwork``).

This module imports nothing from pncd (only the standard library): the Jetson runner copies it
to the device next to ``jetson_runner.py``. Inside pncd its errors are :class:`pncd.errors.PncdError`.
"""

from __future__ import annotations

import re
from typing import Any

try:  # inside pncd: the one-line error type its CLI reports; on the device: a ValueError
    from pncd.errors import PncdError as PlanError
except ImportError:  # pragma: no cover - the device side, where pncd is not installed
    PlanError = ValueError  # type: ignore[misc,assignment]

ONNX_FOR_PRECISION = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx"}
STRONGLY_TYPED_SINCE = (10, 12)
DEFAULT_MAX_BATCH = 32


def parse_trt_version(version: str) -> tuple[int, int, int]:
    """``"10.3.0.30"`` -> ``(10, 3, 0)``; a string that is not a version is an error."""
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not m:
        raise PlanError(f"TensorRT version {version!r} is not a version number like 10.3.0")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def trt_build_plan(version: str, precision: str) -> dict[str, Any]:
    """How to build an engine of ``precision`` with TensorRT ``version`` (a pure function).

    Returns ``{"tensorrt", "precision", "strongly_typed", "network", "builder_flags", "onnx",
    "int8_source"}``: the network kind, the ``BuilderFlag`` names to set and the ONNX file of
    the export to parse.
    """
    if precision not in ONNX_FOR_PRECISION:
        raise PlanError(f"precision {precision!r} is unknown; use one of {', '.join(ONNX_FOR_PRECISION)}")
    major, minor, patch = parse_trt_version(version)
    if major < 10:
        raise PlanError(
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


def build_engine_bytes(onnx_path: str, precision: str, trt: Any, poly: Any, max_batch: int = DEFAULT_MAX_BATCH,
                       workspace_mb: int | None = None) -> tuple[bytes, int]:
    """Build a serialized engine from the export's ONNX; returns (engine bytes, largest batch).

    ``trt`` is the ``tensorrt`` module and ``poly`` Polygraphy's ``polygraphy.backend.trt``
    (passed in so that each side imports them where it can say what is missing). The network is
    parsed first (``NetworkFromOnnxPath``, strongly typed from TensorRT 10.12 on); a dynamic
    batch axis gets one optimisation profile (1 / 1 / ``max_batch``), a static one fixes the
    batch. Precision flags follow :func:`trt_build_plan`. Polygraphy raises
    ``PolygraphyException`` when parsing or building fails (its log says why).
    """
    plan = trt_build_plan(trt.__version__, precision)
    builder, network, parser = poly.NetworkFromOnnxPath(str(onnx_path), strongly_typed=plan["strongly_typed"])()
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    profiles = None
    if shape and shape[0] == -1:
        rest = shape[1:]
        profiles = [poly.Profile().add(inp.name, (1, *rest), (1, *rest), (int(max_batch), *rest))]
    elif shape:
        max_batch = int(shape[0])
    pools = {trt.MemoryPoolType.WORKSPACE: int(workspace_mb) << 20} if workspace_mb else None
    config = poly.CreateConfig(fp16="FP16" in plan["builder_flags"], int8="INT8" in plan["builder_flags"],
                               profiles=profiles, memory_pool_limits=pools)
    data = poly.EngineBytesFromNetwork((builder, network, parser), config=config)()
    return bytes(data), int(max_batch)
