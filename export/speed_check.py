"""What an export says about its speed on this CPU: INT8 against FP32, and FP16 on a CPU.

INT8 is chosen to go faster, and is not always much faster: on ENet at 256x256 (one thread, AMD
EPYC Zen 4) ONNX Runtime's INT8 ran at 1.25x its FP32 and OpenVINO's at 1.5x, where MobileNetV2
and ResNet-18 ran at 3-3.8x: only 35% of ENet's INT8 time on ONNX Runtime is in its convolutions,
the rest is element-wise work, data movement and layout transposes that INT8 does not speed up
(bench/results/speed). So an INT8 export for a CPU runtime (onnxruntime, openvino) times the
artifact against the FP32 model it came from on the same runtime, in alternating blocks on one
thread (:data:`ROUNDS` x :data:`ITERS` inferences each after :data:`WARMUP`), and, where INT8
is below :data:`GOAL` times FP32, prints one line with the reason its profile gives (the share of
time in float ops and in reorders/(de)quantization, :func:`pncd.targets.profiling.reason`) and
the faster precision on this CPU. The manifest records it under ``build.speed``. A measurement
on one CPU under its load of the moment: ``pncd bench`` times artifacts side by side on the
deployment machine.

FP16 for a CPU runtime gets a plain note (``build.precision_note``): FP16 is a GPU format.
ONNX Runtime's CPU provider has FP16 kernels for few ops and casts around the others (measured
2.5x slower than FP32); OpenVINO computes FP16 weights in f32 on CPUs without FP16 arithmetic.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

GOAL = 1.5  # INT8 at least this many times faster than FP32, or the export says why not
ROUNDS, ITERS, WARMUP = 4, 5, 3
CPU_TARGETS = ("onnxruntime", "openvino")

Log = Callable[[str], None]


def fp16_note(target: str, hint: str | None) -> str | None:
    """The note of an FP16 export for a CPU runtime (None for the GPU targets). ``hint``: the
    precision OpenVINO computes in here (f16 where the CPU has FP16 arithmetic)."""
    if target == "onnxruntime":
        return ("FP16 is a GPU format: ONNX Runtime's CPU provider computes few ops in FP16 and casts around the "
                "others (FP16 ran 2.5x slower than FP32 on a CPU); for a CPU export fp32 or int8, keep fp16 for "
                "CUDA (pncd bench --device cuda) or TensorRT")
    if target == "openvino" and hint != "f16":
        return ("FP16 is a GPU format: this CPU has no FP16 arithmetic, so OpenVINO widens the FP16 weights and "
                "computes in f32, no faster than the fp32 export (only the file is half the size); for a CPU export "
                "fp32 or int8")
    return None


def _interleaved(runners: dict[str, Any], feed: dict[str, np.ndarray]) -> dict[str, float]:
    """Median ms per inference of each active runner, timed in alternating blocks."""
    for r in runners.values():
        for _ in range(WARMUP):
            r.infer(feed)
    ms: dict[str, list[float]] = {k: [] for k in runners}
    for i in range(ROUNDS):
        for k in (list(runners) if i % 2 == 0 else list(runners)[::-1]):
            for _ in range(ITERS):
                t0 = time.perf_counter()
                runners[k].infer(feed)
                ms[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in ms.items()}


def int8_speed(target: Any, fp32_onnx: Path, artifact: Path, input_name: str, input_chw: tuple[int, int, int],
               log: Log) -> dict[str, Any]:
    """INT8 (``artifact``) against FP32 (``fp32_onnx``) on ``target``'s runtime, one thread; the
    record for the manifest (see the module docstring), printing the note where INT8 is below GOAL."""
    from pncd.targets.base import RunnerOptions
    from pncd.targets.cpu import isa_summary
    from pncd.targets.profiling import reason, summarize

    feed = {input_name: np.random.default_rng(0).standard_normal((1, *input_chw)).astype(np.float32)}
    runners = {"fp32": target.runner(fp32_onnx, "cpu", RunnerOptions(threads=1, precision="fp32")),
               "int8": target.runner(artifact, "cpu", RunnerOptions(threads=1, precision="int8"))}
    try:
        for r in runners.values():
            r.activate()
        ms = _interleaved(runners, feed)
    finally:
        for r in runners.values():
            r.deactivate()
    speedup = ms["fp32"] / ms["int8"]
    record: dict[str, Any] = {
        "what": f"INT8 against the FP32 model on {target.runtime}, batch 1, one thread, {ROUNDS} alternating blocks "
                f"of {ITERS} inferences after {WARMUP} (this CPU, its load of the moment)",
        "cpu": isa_summary(), "fp32_ms": ms["fp32"], "int8_ms": ms["int8"], "speedup": speedup, "goal": GOAL,
        "faster": "int8" if speedup >= 1.0 else "fp32", "reason": None}
    if speedup < GOAL:
        profile = summarize(runners["int8"].profile(feed, runs=10, warmup=WARMUP))
        record["reason"] = reason(profile)
        log(f"note: INT8 runs at {speedup:.2f}x FP32 on {target.runtime} here (goal {GOAL}x; {ms['int8']:.2f} vs "
            f"{ms['fp32']:.2f} ms, one thread): its profile has {record['reason']}; the faster precision on this CPU "
            f"is {record['faster']}")
    return record


def speed_notes(target: Any, precision: str, fp32_onnx: Path, out_dir: Path, build: dict[str, Any],
                artifact: str, input_name: str, input_chw: tuple[int, int, int] | None, hint: str | None,
                log: Log) -> None:
    """Add ``build.speed`` (CPU INT8) or ``build.precision_note`` (CPU FP16) to ``build``, printing
    the lines the module docstring describes. Nothing for the GPU targets."""
    if target.name not in CPU_TARGETS:
        return
    if precision == "fp16":
        note = fp16_note(target.name, hint)
        if note:
            build["precision_note"] = note
            log(f"note: {note}")
    elif precision == "int8" and input_chw is not None:
        build["speed"] = int8_speed(target, fp32_onnx, out_dir / artifact, input_name, input_chw, log)
