"""The one timing loop: warm-up, then per-call wall times of ``infer(x)``.

Used in-process by the bench and on the device by ``jetson_runner.py``, which gets a copy of
this file: it imports nothing but the standard library.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional


def timed_loop(infer: Callable[[Any], Any], x: Any, warmup: int, iters: int, duration: float,
               min_duration: float = 0.0, on_step: Optional[Callable[[], None]] = None) -> dict:
    """Warm up, then time each call; the raw per-iteration times in milliseconds.

    Runs ``iters`` timed calls, or as many as fit in ``duration`` seconds when ``duration > 0``
    (at least one). ``min_duration`` keeps the loop going at least that long (so tegrastats,
    which samples every interval, sees several samples of a fast model). ``on_step`` is called
    after each timed call, outside the timed span (e.g. a progress bar's update).
    Returns ``{"end_to_end_ms": [...], "duration_s": float, "batch": int}``.
    """
    for _ in range(warmup):
        infer(x)
    e2e = []
    t_start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        infer(x)
        e2e.append((time.perf_counter() - t0) * 1e3)
        if on_step is not None:
            on_step()
        elapsed = time.perf_counter() - t_start
        if elapsed < min_duration:
            continue
        if (duration > 0 and elapsed >= duration) or (duration <= 0 and len(e2e) >= iters):
            break
    return {"end_to_end_ms": e2e, "duration_s": time.perf_counter() - t_start, "batch": int(x.shape[0])}
