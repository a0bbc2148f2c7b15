"""Tests for pncd.metrics: hand-computed cases with stated shapes, empty-case rules, medpy parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pncd.metrics import SegMetrics, confusion, dice, rvd, scores_from_counts, voe


def _mask(rows: list[str]) -> np.ndarray:
    """Build a boolean mask from strings like "11.." (1 = foreground)."""
    return np.array([[ch == "1" for ch in r] for r in rows], dtype=bool)


# -- pure functions, 4x4 masks ------------------------------------------------------------------------
def test_half_overlapping_bands_4x4():
    # G: rows 0-1 (8 px); P: rows 1-2 (8 px); |P n G| = 4, |P u G| = 12.
    g = _mask(["1111", "1111", "....", "...."])
    p = _mask(["....", "1111", "1111", "...."])
    c = confusion(p, g)
    assert (c.intersection, c.pred, c.gt, c.union) == (4, 8, 8, 12)
    assert dice(p, g) == pytest.approx(0.5)
    assert voe(p, g) == pytest.approx(2 / 3)
    assert rvd(p, g) == pytest.approx(0.0)


def test_over_segmentation_4x4():
    # G: 2x2 block (4 px); P: the block plus 2 more pixels (6 px) -> Dice 8/10, VOE 1-4/6, RVD +0.5.
    g = _mask(["11..", "11..", "....", "...."])
    p = _mask(["111.", "111.", "....", "...."])
    assert dice(p, g) == pytest.approx(0.8)
    assert voe(p, g) == pytest.approx(1 / 3)
    assert rvd(p, g) == pytest.approx(0.5)
    # RVD is signed: swapping roles gives (4 - 6) / 6.
    assert rvd(g, p) == pytest.approx(-1 / 3)


def test_disjoint_masks_4x4():
    g = _mask(["1...", "....", "....", "...."])
    p = _mask(["....", "....", "....", "...1"])
    assert dice(p, g) == 0.0
    assert voe(p, g) == 1.0
    assert rvd(p, g) == pytest.approx(0.0)  # same volume, no overlap: RVD only compares volumes


def test_empty_rules():
    empty = np.zeros((4, 4), dtype=bool)
    some = _mask(["11..", "....", "....", "...."])
    # Both empty: Dice 1, VOE 0, RVD 0.
    assert (dice(empty, empty), voe(empty, empty), rvd(empty, empty)) == (1.0, 0.0, 0.0)
    # G empty, P not: Dice 0, VOE 1, RVD undefined.
    assert (dice(some, empty), voe(some, empty), rvd(some, empty)) == (0.0, 1.0, None)
    # P empty, G not: ordinary formulas (Dice 0, VOE 1, RVD -1).
    assert (dice(empty, some), voe(empty, some), rvd(empty, some)) == (0.0, 1.0, -1.0)
    assert scores_from_counts(0, 3, 0) == {"dice": 0.0, "voe": 1.0, "rvd": None}


def test_any_shape_and_shape_mismatch():
    rng = np.random.default_rng(0)
    p3 = rng.random((3, 5, 7)) > 0.5
    g3 = rng.random((3, 5, 7)) > 0.5
    c = confusion(p3, g3)
    assert dice(p3, g3) == pytest.approx(2 * c.intersection / (c.pred + c.gt))
    with pytest.raises(ValueError, match="differs"):
        dice(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_medpy_on_random_masks(seed: int):
    medpy = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(seed)
    shape = (4, 16, 16) if seed % 2 else (32, 32)
    p = rng.random(shape) > rng.uniform(0.3, 0.9)
    g = rng.random(shape) > rng.uniform(0.3, 0.9)
    assert g.any() and p.any()
    assert dice(p, g) == pytest.approx(medpy.dc(p, g), rel=1e-12)
    assert voe(p, g) == pytest.approx(1.0 - medpy.jc(p, g), rel=1e-12)
    assert rvd(p, g) == pytest.approx(medpy.ravd(p, g), rel=1e-12)


# -- accumulator ----------------------------------------------------------------------------------------
def test_per_case_is_3d_not_slice_mean():
    # One case, two 4x4 slices. Slice 0: P = G = all 16 px (Dice 1). Slice 1: G = 1 px, P empty (Dice 0).
    # Slice mean = 0.5, but the 3-D volume has |P n G| = 16, |P| = 16, |G| = 17 -> Dice 32/33.
    gt = np.zeros((2, 4, 4), dtype=np.int64)
    gt[0] = 1
    gt[1, 0, 0] = 1
    pred = np.zeros_like(gt)
    pred[0] = 1
    m = SegMetrics(num_classes=2)
    m.update("a", pred, gt)
    (row,) = m.per_case()
    assert row["dice"] == pytest.approx(32 / 33)
    assert row["voe"] == pytest.approx(1 - 16 / 17)
    assert row["rvd"] == pytest.approx((16 - 17) / 17)
    assert (row["gt_voxels"], row["pred_voxels"], row["n_slices"]) == (17, 16, 2)
    slice_dice = [r["dice"] for r in m.per_slice()]
    assert slice_dice == [1.0, 0.0]
    assert np.mean(slice_dice) != pytest.approx(row["dice"])
    s = m.summary()
    assert s["dice"] == pytest.approx(32 / 33)
    # Both slices have lesion in G: the lesion-slice mean is the slice mean here.
    assert s["dice_lesion_slices"] == pytest.approx(0.5)
    assert s["n_lesion_slices"] == 2


def test_cases_in_pieces_equal_whole_and_2d_updates():
    rng = np.random.default_rng(1)
    pred = (rng.random((5, 8, 8)) > 0.6).astype(np.int64)
    gt = (rng.random((5, 8, 8)) > 0.6).astype(np.int64)
    whole = SegMetrics()
    whole.update("c", pred, gt)
    pieces = SegMetrics()
    pieces.update("c", pred[:2], gt[:2])
    pieces.update("other", gt[:1], gt[:1])
    for i in range(2, 5):  # single (H, W) slices
        pieces.update("c", pred[i], gt[i])
    row_whole = whole.per_case()[0]
    row_pieces = [r for r in pieces.per_case() if r["case"] == "c"][0]
    assert row_whole == row_pieces
    assert [r["case"] for r in pieces.per_case()] == ["c", "other"]


def test_summary_empty_counts_and_rvd_exclusion():
    # Three 1-slice cases of 4x4:
    #  "hit":   G = 4 px, P = same 4 px     -> Dice 1, VOE 0, RVD 0
    #  "fp":    G empty, P = 2 px           -> Dice 0, VOE 1, RVD undefined
    #  "clean": G and P empty               -> Dice 1, VOE 0, RVD 0
    hit = np.zeros((4, 4), np.int64)
    hit[:2, :2] = 1
    fp = np.zeros((4, 4), np.int64)
    fp[3, 2:] = 1
    zero = np.zeros((4, 4), np.int64)
    m = SegMetrics(2)
    m.update("hit", hit, hit)
    m.update("fp", fp, zero)
    m.update("clean", zero, zero)
    rows = {r["case"]: r for r in m.per_case()}
    assert rows["fp"]["rvd"] is None and rows["fp"]["empty_gt"] and not rows["fp"]["empty_both"]
    assert rows["clean"]["empty_both"] and rows["clean"]["rvd"] == 0.0
    s = m.summary()
    assert s["n_cases"] == 3 and s["n_slices"] == 3
    assert s["dice"] == pytest.approx(2 / 3)  # the false-positive case counts in Dice
    assert s["dice_std"] == pytest.approx(np.std([1.0, 0.0, 1.0]))
    assert s["voe"] == pytest.approx(1 / 3)
    assert s["rvd"] == 0.0 and s["rvd_std"] == 0.0  # mean over the two defined cases only
    assert (s["n_rvd_defined"], s["n_rvd_undefined"]) == (2, 1)
    assert (s["n_empty_gt"], s["n_empty_both"]) == (2, 1)
    assert s["dice_lesion_slices"] == 1.0 and s["n_lesion_slices"] == 1


def test_summary_of_nothing_is_none_not_nan():
    s = SegMetrics().summary()
    assert s["n_cases"] == 0 and s["dice"] is None and s["rvd"] is None and s["dice_lesion_slices"] is None


def test_multiclass_one_vs_rest_mean():
    # 3 classes on one 4x4 slice.
    # class 1: G 4 px (rows 0 cols 0-3), P 4 px same -> Dice 1, RVD 0
    # class 2: G 4 px (row 1), P 2 px inside it     -> Dice 4/6, VOE 1 - 2/4, RVD -0.5
    gt = np.zeros((4, 4), np.int64)
    gt[0] = 1
    gt[1] = 2
    pred = gt.copy()
    pred[1, 2:] = 0
    m = SegMetrics(num_classes=3)
    m.update("x", pred, gt)
    (row,) = m.per_case()
    assert row["classes"]["1"]["dice"] == 1.0
    assert row["classes"]["2"]["dice"] == pytest.approx(4 / 6)
    assert row["classes"]["2"]["rvd"] == pytest.approx(-0.5)
    assert row["dice"] == pytest.approx((1 + 4 / 6) / 2)
    assert row["voe"] == pytest.approx((0 + 0.5) / 2)
    assert row["rvd"] == pytest.approx(-0.25)
    assert row["gt_voxels"] == 8 and row["pred_voxels"] == 6
    s = m.summary()
    assert s["classes"]["2"]["dice"] == pytest.approx(4 / 6)
    assert s["n_empty_gt"] == 0


def test_accepts_torch_tensors():
    g = torch.zeros(1, 4, 4, dtype=torch.long)
    g[0, :2, :2] = 1
    m = SegMetrics()
    m.update("t", g.clone(), g)
    assert m.per_case()[0]["dice"] == 1.0


def test_bad_inputs_raise():
    m = SegMetrics(2)
    with pytest.raises(ValueError, match="differs"):
        m.update("a", np.zeros((4, 4), np.int64), np.zeros((4, 5), np.int64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.update("a", np.full((4, 4), 2), np.zeros((4, 4), np.int64))
    with pytest.raises(ValueError, match="shape"):
        m.update("a", np.zeros((1, 1, 4, 4), np.int64), np.zeros((1, 1, 4, 4), np.int64))
    with pytest.raises(ValueError, match="at least 2"):
        SegMetrics(1)
    assert m.per_case() == []  # nothing was added by the failed updates
