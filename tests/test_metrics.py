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


# -- surface distances: HD95 and ASSD (pncd.surface, through MedPy) ---------------------------------------
from pncd.surface import assd, hd95, surface_distances  # noqa: E402


def _square(shape: tuple[int, ...], corner: tuple[int, ...], side: int) -> np.ndarray:
    """A boolean array with an axis-aligned square (cube) of ``side`` at ``corner``."""
    a = np.zeros(shape, dtype=bool)
    a[tuple(slice(c, c + side) for c in corner)] = True
    return a


def _brute_force(p: np.ndarray, g: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Every surface voxel's distance to the other surface, both directions pooled, by pairwise
    distances (a surface voxel: a foreground voxel with a face neighbour outside the mask or array)."""
    def surface(a):
        pad = np.pad(a, 1)
        inner = pad[tuple(slice(1, -1) for _ in a.shape)].copy()
        for ax in range(a.ndim):
            for step in (-1, 1):
                inner &= np.roll(pad, step, axis=ax)[tuple(slice(1, -1) for _ in a.shape)]
        return np.argwhere(a & ~inner) * np.asarray(spacing)
    sp, sg = surface(p), surface(g)
    d = np.sqrt(((sp[:, None, :] - sg[None, :, :]) ** 2).sum(-1))
    return np.concatenate([d.min(axis=1), d.min(axis=0)])


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_squares_offset_by_k_pixels_have_hd95_k(k: int):
    # Every surface pixel of one square, moved by k, lands on the other's surface: no distance
    # exceeds k; the leading edge (10 of the 36 surface pixels, more than 5%) is exactly k away.
    g = _square((32, 32), (8, 8), 10)
    p = _square((32, 32), (8, 8 + k), 10)
    assert hd95(p, g) == pytest.approx(k)
    assert hd95(g, p) == pytest.approx(k)  # symmetric
    d = _brute_force(p, g, (1.0, 1.0))
    assert d.max() == pytest.approx(k)
    assert assd(p, g) == pytest.approx(d.mean())  # the mean of the pooled distances
    assert 0 < assd(p, g) < k


def test_parallel_planes_hand_computed():
    # Two 1-slice-thick planes 3 slices apart in an (8, 6, 6) volume: every surface voxel is 3 away.
    g = np.zeros((8, 6, 6), bool)
    p = np.zeros_like(g)
    g[2], p[5] = True, True
    assert surface_distances(p, g) == pytest.approx((3.0, 3.0))
    assert surface_distances(g, g) == (0.0, 0.0)  # identical masks


def test_empty_mask_rules_of_distances():
    empty = np.zeros((3, 8, 8), bool)
    some = _square((3, 8, 8), (1, 2, 2), 2)
    assert surface_distances(empty, empty) == (0.0, 0.0)  # both empty: 0, not undefined
    assert surface_distances(some, empty) == (None, None)  # exactly one empty: undefined, no made-up value
    assert surface_distances(empty, some) == (None, None)
    assert hd95(some, empty) is None and assd(empty, some) is None


def test_anisotropic_spacing():
    # (slice, row, column) spacing 3 x 0.5 x 0.8 mm: the same voxel offset is 3 mm across slices,
    # 0.8 mm along columns.
    sp = (3.0, 0.5, 0.8)
    g = _square((10, 16, 16), (3, 4, 4), 4)
    across = _square((10, 16, 16), (4, 4, 4), 4)  # one slice further
    along = _square((10, 16, 16), (3, 4, 6), 4)  # two columns further
    assert hd95(across, g, sp) == pytest.approx(3.0)
    assert hd95(along, g, sp) == pytest.approx(1.6)
    assert hd95(along, g) == pytest.approx(2.0)  # no spacing: voxels
    for p in (across, along):
        assert assd(p, g, sp) == pytest.approx(_brute_force(p, g, sp).mean())
    with pytest.raises(ValueError, match="spacing"):
        hd95(g, g, (1.0, 1.0))  # one value per axis
    with pytest.raises(ValueError, match="spacing"):
        hd95(g, g, (1.0, 0.0, 1.0))


def test_bounding_box_crop_matches_medpy_on_the_whole_volume():
    medpy = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(3)
    for _ in range(4):
        p = np.zeros((6, 40, 40), bool)
        g = np.zeros_like(p)
        p[1:4, 5:15, 20:31] = rng.random((3, 10, 11)) > 0.3
        g[2:5, 8:20, 18:30] = rng.random((3, 12, 12)) > 0.3
        g[0, 0, 0] = True  # on the array's corner: the crop keeps its surface
        sp = (2.0, 0.7, 0.9)
        assert surface_distances(p, g, sp) == pytest.approx(
            (medpy.hd95(p, g, voxelspacing=sp), medpy.assd(p, g, voxelspacing=sp)), rel=1e-12)


def test_segmetrics_distances_per_case_summary_and_pieces():
    # "shift": squares 2 px apart on slices 1-2 of 4 (HD95 2); "fp": GT empty, prediction not
    # (undefined); "clean": both empty (0). Spacing doubles the slice case's distances.
    shape = (4, 16, 16)
    g = _square(shape, (1, 4, 4), 6)[:, :, :]
    g[0], g[3] = False, False
    p = np.roll(g, 2, axis=2)
    fp = _square(shape, (0, 0, 0), 2)
    zero = np.zeros(shape, bool)
    m = SegMetrics(2, distances=True, spacing={"shift": (1.0, 2.0, 2.0), "fp": (1.0, 1.0, 1.0),
                                                 "clean": (1.0, 1.0, 1.0)}, unit="mm")
    m.update("shift", p[:2].astype(np.int64), g[:2].astype(np.int64))  # in pieces, as batches send them
    m.update("fp", fp.astype(np.int64), zero.astype(np.int64))
    m.update("shift", p[2:].astype(np.int64), g[2:].astype(np.int64))
    m.update("clean", zero.astype(np.int64), zero.astype(np.int64))
    rows = {r["case"]: r for r in m.per_case()}
    assert rows["shift"]["hd95"] == pytest.approx(4.0)  # 2 px x 2 mm
    assert rows["shift"]["spacing"] == [1.0, 2.0, 2.0]
    assert rows["fp"]["hd95"] is None and rows["fp"]["assd"] is None
    assert rows["clean"]["hd95"] == 0.0 and rows["clean"]["assd"] == 0.0
    s = m.summary()
    assert (s["n_hd_defined"], s["n_hd_undefined"], s["hd95_unit"]) == (2, 1, "mm")
    assert s["hd95"] == pytest.approx(2.0)  # mean of 4 and 0: the undefined case is left out, not counted large
    assert s["hd95_std"] == pytest.approx(2.0)
    assert s["assd"] == pytest.approx((rows["shift"]["assd"] + 0.0) / 2)
    whole = SegMetrics(2, distances=True, spacing={"shift": (1.0, 2.0, 2.0)}, unit="mm")
    whole.update("shift", p.astype(np.int64), g.astype(np.int64))
    assert whole.per_case()[0]["assd"] == rows["shift"]["assd"]
    assert "hd95" not in SegMetrics(2).summary()  # counts only unless distances are asked for
    with pytest.raises(ValueError, match="no spacing"):
        bad = SegMetrics(2, distances=True, unit="mm")
        bad.update("x", g.astype(np.int64), g.astype(np.int64))
        bad.per_case()


def test_segmetrics_distances_multiclass():
    # class 1 matches exactly (0), class 2 is shifted by 1 column (HD95 1): the case's mean is 0.5.
    gt = np.zeros((1, 12, 12), np.int64)
    gt[0, 1:4, 1:4] = 1
    gt[0, 6:10, 6:10] = 2
    pred = gt.copy()
    pred[0, 6:10, 6:10] = 0
    pred[0, 6:10, 7:11] = 2
    m = SegMetrics(3, distances=True)
    m.update("x", pred, gt)
    (row,) = m.per_case()
    assert row["classes"]["1"]["hd95"] == 0.0 and row["classes"]["2"]["hd95"] == pytest.approx(1.0)
    assert row["hd95"] == pytest.approx(0.5)
    s = m.summary()
    assert s["classes"]["2"]["hd95"] == pytest.approx(1.0) and s["hd95_unit"] == "px"
