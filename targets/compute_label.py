"""What an INT8 artifact computes in, in words, for the console, manifests and reports.

An INT8 graph is not computed in INT8 throughout: the layers the export keeps in floating point
(``--keep-float``), and every operation a runtime has no integer kernel for, compute in float.
OpenVINO says which: its compiled model's runtime graph records each executed layer's kind and
runtime precision (``rt_info["layerType"]``, ``rt_info["runtimePrecision"]``), so the label
counts the convolutions that ran in an 8-bit type. The other runtimes tell nothing of the kind:
their label states what the graph asks for.
"""

from __future__ import annotations

from typing import Any

# the layer kinds that carry the arithmetic of a segmentation network (OpenVINO's CPU plugin names)
COMPUTE_KINDS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")
INT8_TYPES = ("u8", "i8")


def openvino_conv_precisions(compiled: Any) -> tuple[int, int] | None:
    """(convolution-like layers that ran in an 8-bit type, all of them) in a compiled OpenVINO
    model's runtime graph; None when the graph does not say (an older plugin, another device)."""
    try:
        ops = compiled.get_runtime_model().get_ops()
    except (AttributeError, RuntimeError):
        return None
    total = int8 = 0
    for op in ops:
        info = op.get_rt_info()
        if "layerType" not in info or "runtimePrecision" not in info:
            continue
        if info["layerType"].astype(str) in COMPUTE_KINDS:
            total += 1
            int8 += info["runtimePrecision"].astype(str) in INT8_TYPES
    return (int8, total) if total else None


def int8_label(runner: Any, float_precision: str) -> str:
    """The label of an INT8 artifact on ``runner``: ``int8 (85 of 89 convolutions; f32 elsewhere)``
    where the runtime reports its layers (OpenVINO), else ``int8 (f32 where kept float)``;
    ``f32 (no convolution ran in int8)`` when the runtime computed none in INT8."""
    counts = openvino_conv_precisions(getattr(runner, "compiled", None)) if getattr(runner, "compiled", None) else None
    if counts is None:
        return f"int8 ({float_precision} where kept float)"
    int8, total = counts
    if not int8:
        return f"{float_precision} (no convolution ran in int8)"
    share = f"all {total}" if int8 == total else f"{int8} of {total}"
    return f"int8 ({share} convolutions; {float_precision} elsewhere)"
