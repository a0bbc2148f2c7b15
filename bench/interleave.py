"""Timings to trust on a busy machine: every runner of a report timed in interleaved rounds.

One figure timed after another compares two machine states: on a shared CPU a torch reference
timed while another job ran looked 40x slower than its artifacts. Here every runner (each
artifact, and the torch reference with 1 thread and with the bench's thread count) is active at
once, and each round times a few iterations of every runner in turn (the order rotates from
round to round), so all of them see the same load. Recorded per runner: the median over all
rounds, the coefficient of variation (std / mean of all iterations), the load average before and
after; per artifact, the speed-up over its reference from the per-round medians, with a
percentile bootstrap interval over rounds. A row is marked unstable when its CV is above
:data:`CV_LIMIT` or the machine's 1-minute load average was above its number of CPUs (other jobs
then share the cores).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pncd.bench.stats import latency_stats

CV_LIMIT = 0.10


@dataclass
class Timed:
    """One runner to time: ``infer(x)`` on a batch-1 input; ``before`` runs ahead of each of its
    blocks, untimed (e.g. setting torch's thread count)."""

    ident: str
    infer: Callable[[np.ndarray], Any]
    x: np.ndarray
    before: Callable[[], None] | None = None
    rounds: list[list[float]] = field(default_factory=list)  # per round, the iterations' ms


def load_average() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_rounds(timed: list[Timed], rounds: int, per_round: int, warmup: int,
               on_round: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Warm every runner up, then ``rounds`` rounds of ``per_round`` timed iterations each."""
    load0 = load_average()
    for t in timed:
        if t.before:
            t.before()
        for _ in range(warmup):
            t.infer(t.x)
    n = len(timed)
    for r in range(rounds):
        for t in timed[r % n:] + timed[: r % n]:
            if t.before:
                t.before()
            ms = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                t.infer(t.x)
                ms.append((time.perf_counter() - t0) * 1e3)
            t.rounds.append(ms)
        if on_round:
            on_round(r)
    return {"load_before": load0, "load_after": load_average(), "cpus": cpu_count(), "rounds": rounds,
            "iterations_per_round": per_round}


def runner_stats(t: Timed, machine: dict[str, Any]) -> dict[str, Any]:
    """Median, CV and the stability verdict of one runner's interleaved iterations."""
    x = np.concatenate([np.asarray(r) for r in t.rounds])
    mean = float(x.mean())
    cv = float(x.std(ddof=1) / mean) if x.size > 1 and mean > 0 else 0.0
    why = []
    if cv > CV_LIMIT:
        why.append(f"CV {cv:.0%} > {CV_LIMIT:.0%}")
    loads = [v for v in (machine["load_before"], machine["load_after"]) if v is not None]
    if loads and max(loads) > machine["cpus"]:
        why.append(f"load average {max(loads):.1f} > {machine['cpus']} CPUs")
    return {"median_ms": float(np.median(x)), "mean_ms": mean, "cv": cv, "n": int(x.size), "stats": latency_stats(x.tolist()),
            "round_medians_ms": [float(np.median(r)) for r in t.rounds], "unstable": bool(why),
            "unstable_why": "; ".join(why) or None}


def speedup(ref: dict[str, Any], art: dict[str, Any], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Reference / artifact latency: the ratio of the overall medians, and a 95% percentile
    bootstrap interval of the mean per-round ratio (rounds resampled)."""
    ratios = np.asarray(ref["round_medians_ms"]) / np.asarray(art["round_medians_ms"])
    rng = np.random.default_rng(seed)
    means = ratios[rng.integers(0, ratios.size, size=(n_boot, ratios.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"speedup": ref["median_ms"] / art["median_ms"], "speedup_ci": [float(lo), float(hi)],
            "speedup_rounds": int(ratios.size)}
