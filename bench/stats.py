"""Small statistics for the bench: latency summaries and a paired bootstrap over cases."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike

LATENCY_KEYS = ("min", "median", "mean", "p90", "p95", "p99", "max", "std")


def latency_stats(ms: Sequence[float] | None) -> dict[str, float | int | None]:
    """Summary of per-iteration times in ms: n, min, median, mean, p90/p95/p99, max, std.

    Percentiles use numpy's default (linear interpolation between order statistics); ``std`` is
    the sample standard deviation (ddof=1; 0 for a single sample). Empty input gives ``None``s.
    """
    x = np.asarray(ms if ms is not None else [], dtype=np.float64)
    if x.size == 0:
        return {"n": 0, **{k: None for k in LATENCY_KEYS}}
    p90, p95, p99 = np.percentile(x, [90, 95, 99])
    return {
        "n": int(x.size),
        "min": float(x.min()),
        "median": float(np.median(x)),
        "mean": float(x.mean()),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(x.max()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
    }


def paired_bootstrap(
    a_values: ArrayLike, b_values: ArrayLike, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """Percentile bootstrap interval of ``mean(a - b)`` for paired per-case values ``a``, ``b``.

    Cases are resampled with replacement (the same indices for both arms, which is what makes it
    paired), ``n_boot`` times with ``numpy.random.default_rng(seed)``; the interval is the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of the resampled means.
    """
    a = np.asarray(a_values, dtype=np.float64)
    b = np.asarray(b_values, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.shape} and {b.shape}")
    out: dict[str, Any] = {
        "method": "paired percentile bootstrap over cases",
        "n": int(a.size),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "confidence": float(confidence),
        "mean": None,
        "lo": None,
        "hi": None,
    }
    if a.size == 0:
        return out
    d = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(int(n_boot), d.size))
    means = d[idx].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    out.update(mean=float(d.mean()), lo=float(lo), hi=float(hi))
    return out
