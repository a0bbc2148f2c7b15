"""The one timing loop (targets/timing.py), shared by the bench and the device runner."""

from __future__ import annotations

import numpy as np

from pncd.targets.timing import timed_loop


def test_counts_warmup_iterations_and_steps():
    calls, steps = [], []
    raw = timed_loop(lambda x: calls.append(x.shape), np.zeros((3, 1, 4, 4)), warmup=2, iters=5, duration=0.0,
                     on_step=lambda: steps.append(1))
    assert len(calls) == 7 and len(steps) == 5 and len(raw["end_to_end_ms"]) == 5
    assert raw["batch"] == 3 and raw["duration_s"] >= 0 and all(t >= 0 for t in raw["end_to_end_ms"])
    assert set(raw) == {"end_to_end_ms", "duration_s", "batch"}


def test_duration_and_min_duration_keep_it_running():
    raw = timed_loop(lambda x: None, np.zeros((1,)), warmup=0, iters=1, duration=0.05)
    assert raw["duration_s"] >= 0.05 and len(raw["end_to_end_ms"]) > 1
    raw = timed_loop(lambda x: None, np.zeros((1,)), warmup=0, iters=1, duration=0.0, min_duration=0.05)
    assert raw["duration_s"] >= 0.05 and len(raw["end_to_end_ms"]) > 1
