"""In-process latency of a runner: warm-up, timed loop, batch throughput, first inference, memory.

What is measured, so a report can say it plainly:

- **end-to-end**: wall time of ``runner.infer(feed)`` with host numpy arrays in and out (the
  runner converts, copies to the device and back, and synchronises before returning);
- **first inference**: the first ``infer`` after ``activate`` (lazy initialisation included);
  **activation**: building the session / compiling the model;
- **memory**: ``ru_maxrss`` growth (this process's peak resident set, so 0 when an earlier stage
  already peaked higher) and the change of the current resident set (``VmRSS``) over activation
  and the runs. Both are whole-process figures and include the runtime's own allocations.
"""

from __future__ import annotations

import resource
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from pncd.bench.stats import latency_stats

if TYPE_CHECKING:
    from pncd.bench.options import BenchOptions


def _rss_mib() -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def timed_loop(
    infer: Callable[[np.ndarray], Any], x: np.ndarray, warmup: int, iters: int, duration: float,
    desc: str | None = None,
) -> dict[str, Any]:
    """Warm up, then time each call (:func:`pncd.targets.timing.timed_loop`, the loop the Jetson
    runner uses too); the raw per-iteration times in ms. ``desc``: a progress bar with this label
    (updated outside the timed calls)."""
    from pncd.targets.timing import timed_loop as loop

    if not desc:
        return loop(infer, x, warmup, iters, duration)
    from pncd.console import progress

    with progress(total=None if duration > 0 else iters, desc=desc, unit="it", mininterval=0.5) as bar:
        return loop(infer, x, warmup, iters, duration, on_step=lambda: bar.update(1))


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Statistics and throughput (images per second) of one :func:`timed_loop` result (or the
    Jetson runner's)."""
    e2e = latency_stats(raw.get("end_to_end_ms"))
    batch = int(raw.get("batch", 1))
    thr = batch * 1e3 / e2e["mean"] if e2e["mean"] else None
    return {"batch": batch, "end_to_end": e2e, "throughput_ips": thr,
            "duration_s": raw.get("duration_s")}


def infer_fn(runner: Any, input_name: str, output_name: str | None) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> the runner's output named output_name`` (its only output when that is absent)."""

    def infer(x: np.ndarray) -> np.ndarray:
        out = runner.infer({input_name: x})
        return out[output_name] if output_name and output_name in out else next(iter(out.values()))

    return infer


def measure(
    make_runner: Callable[[], Any], input_name: str, output_name: str | None, images: np.ndarray,
    opts: BenchOptions, static_batch: int | None = None, desc: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Activate a runner and time it; returns the still-active runner (for the accuracy pass).

    The caller deactivates the runner. ``images`` (N, C, H, W) float32 supplies the inputs: the
    first image for batch 1, the first ``opts.batch`` (repeated if fewer) for the batch run.
    ``static_batch``: the artifact's fixed batch size, if any; a batch run it cannot take is
    not attempted, and the result says why in words. ``desc``: progress bars with this label.
    """
    rss0, peak0 = _rss_mib(), _maxrss_mib()
    t0 = time.perf_counter()
    runner = make_runner()
    runner.activate()
    activation_s = time.perf_counter() - t0

    infer = infer_fn(runner, input_name, output_name)
    try:
        x1 = np.ascontiguousarray(images[:1], dtype=np.float32)
        t0 = time.perf_counter()
        infer(x1)
        first_ms = (time.perf_counter() - t0) * 1e3
        b1 = timed_loop(infer, x1, opts.warmup, opts.iters, opts.duration,
                        desc=f"{desc}: timing batch 1" if desc else None)
        batch: dict[str, Any]
        if opts.batch > 1 and static_batch is not None and static_batch != opts.batch:
            batch = {"batch": opts.batch, "error": f"not measured: exported with a fixed batch of {static_batch} "
                                                   "(export with --dynamic-batch to measure it)"}
        elif opts.batch > 1:
            reps = -(-opts.batch // len(images))
            xb = np.ascontiguousarray(np.concatenate([images] * reps)[: opts.batch], dtype=np.float32)
            try:
                batch = timed_loop(infer, xb, min(opts.warmup, 3), max(5, opts.iters // 4), 0.0,
                                   desc=f"{desc}: timing batch {opts.batch}" if desc else None)
            except Exception as e:  # e.g. a graph exported with a fixed batch of 1
                batch = {"batch": opts.batch, "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
        else:
            batch = {"batch": 1, "error": "not measured (--batch 1)"}
    except BaseException:
        runner.deactivate()
        raise
    rss1, peak1 = _rss_mib(), _maxrss_mib()
    return runner, {
        "activation_s": activation_s,
        "first_inference_ms": first_ms,
        "b1_raw": b1,
        "batch_raw": batch,
        "memory": {
            "rss_peak_growth_mib": peak1 - peak0,
            "rss_delta_mib": (rss1 - rss0) if rss0 is not None and rss1 is not None else None,
            "what": "whole process: ru_maxrss growth and VmRSS change over activation and the timed runs",
        },
    }
