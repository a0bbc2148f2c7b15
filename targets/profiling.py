"""Where a runtime spends an inference, from its own profiler: per-node records and their summary.

The runners that can profile (:meth:`pncd.targets.onnxrt.OnnxRuntimeRunner.profile`,
:meth:`pncd.targets.openvino_rt.OpenVinoRunner.profile`) open a session of their own with the
runtime's profiler on (ONNX Runtime's ``enable_profiling`` JSON trace, OpenVINO's ``PERF_COUNT``
and ``InferRequest.get_profiling_info()``), run a short loop after a warm-up and return a *raw
profile*: ``{"runtime", "profiler", "runs", "warmup", "wall_ms" (per run), "nodes"}``, each node
``{"name", "op_type", "exec_type", "precision", "kind", "weight_layer", "ms", "ms_mean"}`` with
``ms`` its median time per run (:func:`per_run`) and ``ms_mean`` its mean. The session that is
timed never has the profiler on.

Each node is put in one of four buckets, whose times add up to the profiled total:

- ``int8``: computed on 8-bit integers (ONNX Runtime: ``QLinear*``, ``ConvInteger``,
  ``MatMulInteger``, or any other op whose output is u8/i8, e.g. a ``Slice`` of a quantized
  tensor; OpenVINO: an exec type ending in ``I8``/``U8``, e.g. ``brgconv_avx512_1x1_I8``);
- ``float``: computed in f32, f16 or bf16 (OpenVINO: the exec type's suffix);
- ``reorder/convert``: moves or converts data without computing: layout reorders and transposes
  (ONNX Runtime's ``Transpose``, ``ReorderInput``/``ReorderOutput``; OpenVINO's ``Reorder``),
  casts and (de)quantization (``QuantizeLinear``, ``DequantizeLinear``, ``Cast``; OpenVINO's
  ``Convert`` and ``FakeQuantize``, also where fused into a ``Subgraph`` of its own);
- ``other``: boolean and index ops (``Equal``, ``And``, ``Not`` ... on masks).

:func:`summarize` turns a raw profile into what the bench report and the export print: the time
per op type (with the precisions it ran in), the share of each bucket, the weight layers
(convolutions, matrix products) left in float, and the largest reorders and conversions.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

BUCKETS = ("int8", "float", "reorder/convert", "other")
FLOAT_PRECISIONS = ("f32", "f16", "bf16", "f64")

# ONNX Runtime op types that compute on 8-bit integers whatever their output type
ORT_INTEGER_OPS = ("ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm",
                   "QAttention", "QEmbedLayerNormalization", "DynamicQuantizeLSTM")
ORT_REORDER_OPS = ("Transpose", "ReorderInput", "ReorderOutput")
ORT_CONVERT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast")
ORT_WEIGHT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv", "FusedGemm", "FusedMatMul", "NhwcFusedConv",
                  "QLinearConv", "QLinearConvTranspose", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger",
                  "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "NhwcConv", "QAttention")
OV_REORDER_OPS = ("Reorder", "Transpose")
OV_CONVERT_OPS = ("Convert", "FakeQuantize")
OV_WEIGHT_OPS = ("Convolution", "GroupConvolution", "Deconvolution", "ConvolutionBackpropData",
                 "GroupConvolutionBackpropData", "FullyConnected", "MatMul")

_ORT_TYPES = {"uint8": "int8", "int8": "int8", "float": "f32", "float16": "f16", "bfloat16": "bf16", "double": "f64"}
_OV_SUFFIX = {"i8": "int8", "u8": "int8", "f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16",
              "f64": "f64"}


def bucket(kind: str, precision: str) -> str:
    """The bucket of a node (see the module docstring)."""
    if kind in ("reorder", "convert"):
        return "reorder/convert"
    if precision == "int8":
        return "int8"
    return "float" if precision in FLOAT_PRECISIONS else "other"


def _ort_type(shapes: Any) -> str | None:
    """The element type of the first tensor of ONNX Runtime's ``[{"float": [1, 16, 64, 64]}, ...]``."""
    for item in shapes or ():
        if isinstance(item, dict) and item:
            return str(next(iter(item)))
    return None


def ort_node(name: str, op_type: str, inputs: Any, outputs: Any, provider: str | None) -> dict[str, Any]:
    """One ONNX Runtime node's record (without its time): precision from the op type, else the
    element type of its output (its first input where it has none)."""
    kind = "reorder" if op_type in ORT_REORDER_OPS else "convert" if op_type in ORT_CONVERT_OPS else "compute"
    elem = _ort_type(outputs) or _ort_type(inputs)
    if op_type.startswith("QLinear") or op_type in ORT_INTEGER_OPS:
        precision = "int8"
    else:
        precision = _ORT_TYPES.get(elem or "", elem or "unknown")
    return {"name": name, "op_type": op_type, "exec_type": provider, "precision": precision, "kind": kind,
            "weight_layer": op_type in ORT_WEIGHT_OPS, "element_type": elem}


def per_run(times: dict[str, list[float]], runs: int) -> dict[str, dict[str, float]]:
    """{node: {"ms": median per run, "ms_mean": mean per run}} from each node's times in the profiled
    runs (a node that ran more than once in a run has its times of the run summed by the caller).
    The median: on a machine shared with other jobs, a run in which the thread was preempted inside
    a node inflates that node's mean, not its median."""
    out = {}
    for node, ms in times.items():
        padded = sorted(ms + [0.0] * max(0, runs - len(ms)))
        out[node] = {"ms": float(padded[len(padded) // 2]) if len(padded) % 2
                     else float((padded[len(padded) // 2 - 1] + padded[len(padded) // 2]) / 2),
                     "ms_mean": float(sum(padded) / max(1, len(padded)))}
    return out


def ort_trace_nodes(events: list[dict[str, Any]], runs: int) -> tuple[list[dict[str, Any]], list[float]]:
    """(node records with their median ms per run, each run's ms) from ONNX Runtime's JSON trace,
    over its last ``runs`` runs (``model_run`` events; the warm-up runs before them are left out)."""
    model_runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][-runs:]
    spans = [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in model_runs]
    times: dict[str, dict[int, float]] = defaultdict(dict)
    info: dict[str, dict[str, Any]] = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        ts = float(e.get("ts", 0))
        run = next((i for i, (lo, hi) in enumerate(spans) if lo <= ts <= hi), None)
        if run is None:
            continue
        node = name[: -len("_kernel_time")]
        args = e.get("args") or {}
        times[node][run] = times[node].get(run, 0.0) + float(e.get("dur", 0)) / 1e3
        if node not in info:
            info[node] = ort_node(node, str(args.get("op_name", "?")), args.get("input_type_shape"),
                                  args.get("output_type_shape"), args.get("provider"))
    stats = per_run({k: list(v.values()) for k, v in times.items()}, len(spans))
    nodes = [{**info[k], **stats[k]} for k in times]
    return nodes, [(hi - lo) / 1e3 for lo, hi in spans]


def ov_precision(exec_type: str, output_precisions: str | None = None) -> str:
    """The precision an OpenVINO CPU node ran in, from its exec type's suffix (``jit_avx512_I8``
    -> int8); a node whose outputs are boolean (masks) is "bool" whatever its kernel."""
    if output_precisions and all(p.strip() == "boolean" for p in output_precisions.split(",") if p.strip()):
        return "bool"
    suffix = (exec_type or "").rsplit("_", 1)[-1].lower()
    return _OV_SUFFIX.get(suffix, suffix or "unknown")


def ov_node(name: str, node_type: str, exec_type: str, original_types: Iterable[str] = (),
            output_precisions: str | None = None) -> dict[str, Any]:
    """One OpenVINO node's record (without its time). ``original_types``: the op types of the
    model's layers the plugin fused into it (a ``Subgraph`` of FakeQuantize ops alone is a conversion)."""
    originals = [t for t in original_types if t]
    if node_type in OV_REORDER_OPS:
        kind = "reorder"
    elif node_type in OV_CONVERT_OPS or (originals and all(t in OV_CONVERT_OPS for t in originals)):
        kind = "convert"
    else:
        kind = "compute"
    return {"name": name, "op_type": node_type, "exec_type": exec_type,
            "precision": ov_precision(exec_type, output_precisions), "kind": kind,
            "weight_layer": node_type in OV_WEIGHT_OPS, "fused": originals or None}


def summarize(raw: dict[str, Any], top: int = 10) -> dict[str, Any]:
    """What a raw profile says (see the module docstring); shares are of the nodes' total time."""
    nodes = [n for n in raw.get("nodes") or [] if n.get("ms") is not None]
    total = sum(n["ms"] for n in nodes)
    share = (lambda ms: ms / total if total > 0 else 0.0)
    by_op: dict[str, dict[str, Any]] = {}
    buckets = {b: 0.0 for b in BUCKETS}
    for n in nodes:
        b = bucket(n["kind"], n["precision"])
        buckets[b] += n["ms"]
        row = by_op.setdefault(n["op_type"], {"op_type": n["op_type"], "ms": 0.0, "count": 0, "precisions": {},
                                              "buckets": {}, "weight_layer": False})
        row["weight_layer"] = row["weight_layer"] or (n["weight_layer"] and n["kind"] == "compute")
        row["ms"] += n["ms"]
        row["count"] += 1
        row["precisions"][n["precision"]] = row["precisions"].get(n["precision"], 0.0) + n["ms"]
        row["buckets"][b] = row["buckets"].get(b, 0.0) + n["ms"]
    ops = sorted(by_op.values(), key=lambda r: -r["ms"])
    for r in ops:
        r["share"] = share(r["ms"])
    layers = [n for n in nodes if n["weight_layer"] and n["kind"] == "compute"]
    float_layers = [n for n in layers if n["precision"] in FLOAT_PRECISIONS]
    moves = sorted((n for n in nodes if n["kind"] in ("reorder", "convert")), key=lambda n: -n["ms"])
    wall = sorted(raw.get("wall_ms") or [])
    return {
        "runtime": raw.get("runtime"), "profiler": raw.get("profiler"), "runs": raw.get("runs"),
        "nodes": len(nodes), "node_ms": total, "wall_ms_median": wall[len(wall) // 2] if wall else None,
        "buckets": {b: {"ms": ms, "share": share(ms)} for b, ms in buckets.items()},
        "float_share": share(buckets["float"]), "integer_share": share(buckets["int8"]),
        "conversion_share": share(buckets["reorder/convert"]),
        "by_op": ops,
        "weight_layers": {"total": len(layers), "int8": sum(n["precision"] == "int8" for n in layers),
                          "ms": sum(n["ms"] for n in layers), "share": share(sum(n["ms"] for n in layers)),
                          "float": len(float_layers), "float_ms": sum(n["ms"] for n in float_layers),
                          "float_names": [n["name"] for n in sorted(float_layers, key=lambda n: -n["ms"])]},
        "conversions": [{"name": n["name"], "op_type": n["op_type"], "ms": n["ms"], "share": share(n["ms"])}
                        for n in moves[:top]],
    }


def top_ops(s: dict[str, Any], which: str | None = None, k: int = 3, weight: bool | None = None) -> str:
    """``"Conv 56%, Where 9%, Slice 6%"``: the op types with the most time (in bucket ``which``;
    ``weight``: only weight-layer op types, or only the others)."""
    share = (lambda ms: ms / s["node_ms"] if s["node_ms"] > 0 else 0.0)
    rows = sorted(((r["op_type"], r["ms"] if which is None else r["buckets"].get(which, 0.0)) for r in s["by_op"]
                   if weight is None or r.get("weight_layer", False) == weight), key=lambda r: -r[1])
    return ", ".join(f"{op} {share(ms):.0%}" for op, ms in rows[:k] if ms > 0)


def reason(s: dict[str, Any]) -> str:
    """One line: how much of the time is in the weight layers (what INT8 speeds up) and where the
    rest goes: float ops, reorders and (de)quantization, element-wise and data-movement ops in int8."""
    w, b = s["weight_layers"], s["buckets"]
    share = (lambda ms: ms / s["node_ms"] if s["node_ms"] > 0 else 0.0)
    float_rest = b["float"]["ms"] - w["float_ms"]
    int8_rest = b["int8"]["ms"] - (w["ms"] - w["float_ms"])
    parts = [f"{w.get('share', 0.0):.0%} of the time in its weight layers ({w['int8']} of {w['total']} in int8), "
             f"the part INT8 speeds up"]
    rest = (("float ops", float_rest, "float"),
            ("reorders/(de)quantization", b["reorder/convert"]["ms"], "reorder/convert"),
            ("int8 element-wise and data-movement ops", int8_rest, "int8"))
    for label, ms, which in rest:
        top = top_ops(s, which, weight=False)
        if share(ms) >= 0.005:
            parts.append(f"{share(ms):.0%} in {label}" + (f" ({top})" if top else ""))
    return "; ".join(parts)


def line(s: dict[str, Any]) -> str:
    """A one-line summary of a profile for the console."""
    b, w = s["buckets"], s["weight_layers"]
    return (f"{s['node_ms']:.2f} ms/run in {s['nodes']} nodes: int8 {b['int8']['share']:.0%}, float "
            f"{b['float']['share']:.0%}, reorder/convert {b['reorder/convert']['share']:.0%}, other "
            f"{b['other']['share']:.0%}; weight layers {w.get('share', 0.0):.0%} of the time ({w['int8']} in int8, "
            f"{w['float']} in float); top: {top_ops(s)}")
