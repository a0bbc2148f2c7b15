"""``pncd bench --profile``: where each artifact's time goes, from its runtime's own profiler.

After an artifact is timed, a separate session of its runtime with the profiler on runs a short
loop (:data:`WARMUP` inferences, then :data:`RUNS` profiled ones) on the first image, so the
timed latency never carries the profiler's cost: ONNX Runtime's ``enable_profiling`` trace
(per node: op type, provider, element types), OpenVINO's ``PERF_COUNT`` counters (per node: type,
exec type such as ``brgconv_avx512_1x1_I8``, real time), TensorRT's per-layer times where
TensorRT runs the artifact (:func:`tensorrt_profile`). What the nodes say is summed by
:func:`pncd.targets.profiling.summarize`: time per op type and the precisions it ran in, the
shares in integer, float and reorder/convert (the reorders, transposes, casts and (de)quantize
nodes the runtime inserted or kept), and the weight layers left in float.

Written to ``profile.json`` (schema ``pncd.profile/1``: per entry the summary and every node), a
section of ``report.md`` (:func:`markdown_section`) and one console line per artifact. An
artifact no profiler can read (a Jetson's, a runtime without a profiling hook) is recorded with
the reason.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

SCHEMA = "pncd.profile/1"
RUNS = 20
WARMUP = 5

Log = Callable[[str], None]


def collect(runner: Any, feed: dict[str, np.ndarray], runs: int = RUNS, warmup: int = WARMUP) -> dict[str, Any]:
    """A raw profile of ``runner`` (inactive; it opens a profiling session of its own), or
    ``{"skipped": reason}`` where its runtime offers no profiler here."""
    if hasattr(runner, "profile"):
        return runner.profile(feed, runs=runs, warmup=warmup)
    if type(runner).__name__ == "TensorRTRunner":
        return tensorrt_profile(runner, feed, runs, warmup)
    return {"skipped": f"{type(runner).__name__} has no per-layer profiler in pncd (profiles cover ONNX Runtime, "
                       "OpenVINO and TensorRT)"}


def tensorrt_profile(runner: Any, feed: dict[str, np.ndarray], runs: int, warmup: int) -> dict[str, Any]:
    """Per-layer times of a TensorRT engine through ``tensorrt.IProfiler`` on the execution context
    of the runner's Polygraphy ``TrtRunner``; ``{"skipped": reason}`` where TensorRT is not importable."""
    try:
        import tensorrt as trt
    except ImportError as e:
        return {"skipped": f"TensorRT is not importable here ({e}); its per-layer profile needs an NVIDIA GPU with "
                           "TensorRT (or trtexec --dumpProfile on the device)"}

    class _Layers(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.ms: dict[str, list[float]] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.ms.setdefault(layer_name, []).append(float(ms))

    import time

    runner.activate()
    try:
        context = getattr(runner._runner, "context", None)  # polygraphy's TrtRunner
        if context is None:
            return {"skipped": "the TensorRT runner exposes no execution context to profile"}
        for _ in range(warmup):
            runner.infer(feed)
        prof = _Layers()
        context.profiler = prof
        wall = []
        for _ in range(runs):
            t0 = time.perf_counter()
            runner.infer(feed)
            wall.append((time.perf_counter() - t0) * 1e3)
    finally:
        runner.deactivate()
    nodes = [{"name": name, "op_type": name.split(" ")[0], "exec_type": "tensorrt", "precision": "unknown",
              "kind": "compute", "weight_layer": False, "ms": sum(v) / max(1, runs)} for name, v in prof.ms.items()]
    return {"runtime": "tensorrt", "profiler": "tensorrt.IProfiler (per layer, layer precision not reported)",
            "runs": runs, "warmup": warmup, "wall_ms": wall, "nodes": nodes}


def profile_entry(site: Any, ident: str, log: Log) -> dict[str, Any]:
    """Profile the artifact ``site`` measured as ``ident`` (a separate session, after its timing);
    ``{"summary": ..., "nodes": [...]}``, or ``{"skipped": reason}``. Logs one line."""
    from pncd.targets.profiling import line, summarize

    factories = getattr(site, "factories", None) or {}
    if ident not in factories:
        why = ("it runs on the Jetson, where pncd has no profiling hook; trtexec --dumpProfile profiles it there"
               if getattr(site, "device", None) == "jetson" else "no local runner to profile")
        log(f"[{ident}] profile: skipped ({why})")
        return {"skipped": why}
    factory, art, x, _kind = factories[ident]
    try:
        raw = collect(factory(site.threads), {art.input_name: x})
    except Exception as e:  # a runtime's own error types; the timing and accuracy stand without the profile
        raw = {"skipped": f"the profiler failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    if "skipped" in raw:
        log(f"[{ident}] profile: skipped ({raw['skipped']})")
        return {"skipped": raw["skipped"]}
    summary = summarize(raw)
    log(f"[{ident}] profile ({raw['runtime']}, {raw['runs']} runs after {raw['warmup']} warm-up): {line(summary)}")
    return {"summary": summary, "nodes": sorted(raw["nodes"], key=lambda n: -n["ms"]),
            "wall_ms": raw.get("wall_ms"), "settings": {k: v for k, v in raw.items()
                                                       if k in ("providers", "device", "config")}}


def profile_json(profiles: dict[str, dict[str, Any]], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """profile.json's object: per entry id its artifact's facts, the summary and every node."""
    facts = {e["id"]: {k: e.get(k) for k in ("target", "runtime", "precision", "compute_precision",
                                               "latency_ms_median")} for e in entries}
    return {"schema": SCHEMA, "runs": RUNS, "warmup": WARMUP,
            "what": "per node: mean time per run (ms) from the runtime's own profiler, in a session of its own "
                    "after the timing; buckets: int8, float, reorder/convert (reorders, transposes, casts, "
                    "(de)quantization), other (boolean and index ops)",
            "entries": {ident: {**facts.get(ident, {}), **p} for ident, p in profiles.items()}}


def summaries(profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """report.json's ``profile``: per entry its summary (or why it was skipped), without the nodes."""
    return {ident: ({"skipped": p["skipped"]} if "skipped" in p else p["summary"]) for ident, p in profiles.items()}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def markdown_section(profile: dict[str, Any], top: int = 5) -> str:
    """report.md's profile section from report.json's ``profile`` (:func:`summaries`)."""
    from pncd.targets.profiling import top_ops

    rows, skipped = [], []
    for ident, s in profile.items():
        if "skipped" in s:
            skipped.append(f"- {ident}: not profiled: {s['skipped']}")
            continue
        w = s["weight_layers"]
        b = s["buckets"]
        rows.append([ident, s["runtime"], f"{s['node_ms']:.2f}", _pct(b["int8"]["share"]), _pct(b["float"]["share"]),
                     _pct(b["reorder/convert"]["share"]), f"{w['int8']} / {w['float']} ({_pct(w.get('share'))})",
                     top_ops(s, k=top), top_ops(s, "float", k=3) or "–", top_ops(s, "reorder/convert", k=3) or "–"])
    text = ("## Profile (the runtime's own profiler, per node)\n\n"
            f"A session of its own per artifact, after its timing: {WARMUP} warm-up runs, then {RUNS} profiled ones "
            "(batch 1); each node's median time over the runs, summed, and shares of that sum. int8: computed on 8-bit "
            "integers; float: f32/f16/bf16; reorder/convert: layout reorders, transposes, casts and (de)quantization "
            "the runtime inserted or kept; weight layers: convolutions and matrix products (in int8 / in float, and their "
            "share of the time: the part INT8 speeds up). Every node is in profile.json.\n\n")
    if rows:
        text += _table(["entry", "runtime", "ms/run (nodes)", "int8", "float", "reorder/convert",
                        "weight layers int8 / float", f"top {top} op types", "most float time",
                        "most reorder/convert time"], rows)
    return text + ("\n\n" + "\n".join(skipped) if skipped else "")
