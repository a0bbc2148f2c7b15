"""Latency statistics, the paired bootstrap, scoring and the artifact/reference comparison
(label maps and slice choice: tests/test_evaluation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pncd.bench.accuracy import compare
from pncd.bench.latency import summarize, timed_loop
from pncd.bench.stats import latency_stats, paired_bootstrap
from pncd.scoring import score as evaluate


def test_latency_stats_matches_numpy():
    x = np.random.default_rng(3).gamma(2.0, 1.5, size=101)
    s = latency_stats(x.tolist())
    assert s["n"] == 101
    assert s["median"] == pytest.approx(np.median(x)) and s["mean"] == pytest.approx(x.mean())
    assert s["p99"] == pytest.approx(np.percentile(x, 99)) and s["std"] == pytest.approx(x.std(ddof=1))
    assert s["min"] <= s["median"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]
    assert latency_stats([])["median"] is None
    assert latency_stats([2.0])["std"] == 0.0


def test_paired_bootstrap_interval_and_seed():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.6, 0.9, size=40)
    art = ref - 0.02 + rng.normal(0, 0.005, size=40)
    b = paired_bootstrap(art, ref, n_boot=3000, seed=7)
    assert b["mean"] == pytest.approx(np.mean(art - ref))
    assert b["lo"] < b["mean"] < b["hi"] < 0  # a real, consistent drop: the interval excludes 0
    assert paired_bootstrap(art, ref, n_boot=3000, seed=7) == b  # seeded: reproducible
    same = paired_bootstrap(ref, ref, n_boot=500)
    assert same["lo"] == same["hi"] == 0.0
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


def _two_cases():
    masks = np.zeros((4, 8, 8), np.int64)
    masks[0, 2:5, 2:5] = 1  # case a, slice 0
    masks[2, 1:7, 1:7] = 1  # case b, slice 0
    return masks, ["a", "a", "b", "b"]


def score(preds, masks, ids, num_classes):
    m = evaluate(preds, masks, ids, num_classes)
    return m.summary(), m.per_case()


def test_compare_reports_drop_and_disagreement():
    masks, ids = _two_cases()
    ref = masks.astype(np.uint8)
    art = ref.copy()
    art[2, 1:4, 1:7] = 0
    rs, rc = score(ref, masks, ids, 2)
    s, c = score(art, masks, ids, 2)
    cmp = compare(c, rc, s, rs, art, ref, n_boot=200, seed=0)
    assert cmp["dice_diff"] == pytest.approx(s["dice"] - rs["dice"]) and cmp["dice_diff"] < 0
    assert cmp["dice_rel"] == pytest.approx(s["dice"] / rs["dice"])
    assert cmp["worst_case"] == "b" and cmp["worst_case_dice_drop"] == pytest.approx(1 - 36 / 54)
    assert cmp["n_slices_differ"] == 1 and cmp["pixel_agreement"] == pytest.approx(1 - 18 / art.size)
    assert cmp["dice_diff_ci_lo"] <= cmp["dice_diff_boot_mean"] <= cmp["dice_diff_ci_hi"]


def test_timed_loop_counts_and_duration():
    import time

    raw = timed_loop(lambda x: time.sleep(0.001), np.zeros((2, 1)), warmup=1, iters=7, duration=0.0)
    assert len(raw["end_to_end_ms"]) == 7 and min(raw["end_to_end_ms"]) >= 1.0
    s = summarize(raw)
    assert s["batch"] == 2 and s["throughput_ips"] == pytest.approx(2e3 / s["end_to_end"]["mean"])
    raw = timed_loop(lambda x: None, np.zeros((1, 1)), warmup=0, iters=10**9, duration=0.05)
    assert raw["duration_s"] >= 0.05 and len(raw["end_to_end_ms"]) > 10
