"""Pictures a person reads at a glance: a Dice axis that does not magnify a 0.004 difference,
interval bars and the gate line in the latency-Dice plot, overlays with ground truth, prediction,
their difference, a legend and the slice's Dice."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pncd.bench import figures as rep
from pncd.viz import (BOTH_COLOR, EXTRA_COLOR, MISSED_COLOR, OVERLAY_LEGEND, OVERLAY_TITLES, overlay, save_png,
                      slice_dice)


def _entry(name, kind, dice, sd=0.1, n=18, ms=5.0):
    return {"name": name, "kind": kind, "dice": dice, "dice_std": sd, "n_cases": n, "latency_ms_median": ms,
            "precision": "fp32"}


def test_dice_axis_starts_from_a_sensible_floor():
    pts = [_entry("torch", "reference", 0.614), _entry("ov-int8", "artifact", 0.608, ms=1.0)]
    lo, hi = rep.dice_axis(pts, [0.614 * 0.99])
    assert hi - lo >= 0.3 and lo <= 0.608 - 0.2 and hi >= 0.614 and 0 <= lo < hi <= 1
    assert rep.dice_axis([_entry("a", "reference", 0.98, sd=0.01)], [])[1] == 1.0


def test_latency_dice_plot_has_interval_bars_and_the_gate_line(tmp_path, monkeypatch):
    import matplotlib.axes

    calls = {"errorbar": 0, "axhline": []}
    real_errorbar, real_axhline = matplotlib.axes.Axes.errorbar, matplotlib.axes.Axes.axhline

    def errorbar(self, *a, **k):
        calls["errorbar"] += 1
        return real_errorbar(self, *a, **k)

    def axhline(self, y=0, *a, **k):
        calls["axhline"].append(y)
        return real_axhline(self, y, *a, **k)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", errorbar)
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", axhline)
    pts = [_entry("torch", "reference", 0.614), _entry("ov-int8", "artifact", 0.608, ms=1.0)]
    assert rep.plot_latency_dice(pts, tmp_path / "p.png")
    assert calls["errorbar"] == 2 and calls["axhline"] == [0.614 * rep.KEPT_RATIO]
    assert Image.open(tmp_path / "p.png").size[0] > 500


def test_overlay_shows_difference_legend_and_dice(tmp_path):
    img = np.random.default_rng(0).normal(size=(1, 32, 32)).astype(np.float32)
    gt = np.zeros((32, 32), np.uint8)
    gt[8:20, 8:20] = 1
    pred = np.zeros_like(gt)
    pred[10:24, 10:24] = 1
    panel = overlay(img, gt, pred)
    assert panel.shape == (32, 4 * 32 + 3 * 2, 3)
    diff = panel[:, 3 * 34:]
    colors = {tuple(c) for c in diff.reshape(-1, 3)}
    assert {MISSED_COLOR, EXTRA_COLOR, BOTH_COLOR} <= colors
    d = slice_dice(pred, gt)
    assert abs(d - 2 * 100 / (144 + 196)) < 1e-9 and slice_dice(gt * 0, gt * 0) == 1.0
    save_png(tmp_path / "o.png", panel, scale=4, titles=OVERLAY_TITLES, legend=OVERLAY_LEGEND,
             caption=f"TCGA_X_1, slice 12: Dice {d:.3f}")
    out = np.asarray(Image.open(tmp_path / "o.png").convert("RGB"))
    assert out.shape[1] == panel.shape[1] * 4 and out.shape[0] > 32 * 4 + 30  # caption, titles and legend rows
    legend_band = out[-18:]
    for color, _label in OVERLAY_LEGEND:  # each swatch drawn below the image
        assert (legend_band == np.array(color, np.uint8)).all(axis=-1).any(), color


def test_bench_panel_titles_carry_each_prediction_dice():
    gt = np.zeros((16, 16), np.uint8)
    gt[4:8, 4:8] = 1
    titles = rep.panel_titles(gt, gt, np.zeros_like(gt))
    assert titles[1] == "reference (Dice 1.000)" and titles[2] == "artifact (Dice 0.000)"
    panel = rep.disagreement_panel(np.ones((1, 16, 16), np.float32), gt, gt, np.zeros_like(gt))
    assert (panel[:, 3 * 18:] == np.array(rep.REF_ONLY, np.uint8)).all(axis=-1).sum() == 16
