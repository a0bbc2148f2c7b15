"""HD95 and ASSD in the bench report: each entry's means (unit in the JSON and the Markdown header,
— where undefined) and the artifact-minus-reference differences with a paired bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from pncd.bench.accuracy import compare
from pncd.bench.report import accuracy_fields, accuracy_section, compare_fields
from pncd.scoring import score


def _scored(preds, masks, ids, spacing):
    m = score(preds, masks, ids, 2, distances=True, spacing=spacing, unit="mm")
    return m.summary(), m.per_case()


def test_compare_gives_distance_differences_and_their_interval():
    # Three one-slice cases of 16x16 with a 6x6 lesion; the artifact shifts case b's by 2 columns
    # and case c's by 1 (HD95 2 and 1 px, at 0.5 mm: 1.0 and 0.5 mm); case a agrees.
    masks = np.zeros((3, 16, 16), np.int64)
    masks[:, 4:10, 4:10] = 1
    ids = ["a", "b", "c"]
    spacing = {c: (3.0, 0.5, 0.5) for c in ids}
    ref = masks.astype(np.uint8)
    art = ref.copy()
    art[1] = np.roll(ref[1], 2, axis=1)
    art[2] = np.roll(ref[2], 1, axis=1)
    rs, rc = _scored(ref, masks, ids, spacing)
    s, c = _scored(art, masks, ids, spacing)
    assert [r["hd95"] for r in c] == pytest.approx([0.0, 1.0, 0.5])
    cmp = compare(c, rc, s, rs, art, ref, n_boot=500, seed=0)
    assert cmp["hd95_diff"] == pytest.approx(0.5)  # mean (0 + 1 + 0.5) / 3 - 0
    assert 0.0 <= cmp["hd95_diff_ci_lo"] <= 0.5 <= cmp["hd95_diff_ci_hi"] <= 1.0
    assert cmp["assd_diff"] == pytest.approx(s["assd"]) and cmp["assd_diff"] > 0
    e = {"name": "x", **accuracy_fields(s), **compare_fields(cmp)}
    assert e["hd95_unit"] == "mm" and e["n_hd_undefined"] == 0 and e["hd95"] == pytest.approx(0.5)


def test_markdown_shows_the_unit_and_a_dash_where_undefined():
    # Case "fp": ground truth empty, prediction not: undefined, left out of the mean.
    masks = np.zeros((2, 8, 8), np.int64)
    masks[0, 2:5, 2:5] = 1
    preds = masks.astype(np.uint8).copy()
    preds[1, 0:2, 0:2] = 1
    s, _ = score(preds, masks, ["hit", "fp"], 2, distances=True).summary(), None
    assert (s["hd95"], s["n_hd_undefined"], s["hd95_unit"]) == (0.0, 1, "px")
    only_fp = score(preds[1:], masks[1:], ["fp"], 2, distances=True).summary()
    assert only_fp["hd95"] is None and only_fp["assd"] is None
    base = {"n_cases": 1, "n_slices": 1, "dice": 0.0, "dice_std": 0.0, "voe": 1.0, "rvd": None, "n_rvd_undefined": 1,
            "n_empty_gt": 1, "n_empty_both": 0}
    md = accuracy_section([{"name": "good", **base, **s}, {"name": "none", **base, **only_fp}])
    header, _, good, none = md.split("\n\n", 1)[1].splitlines()
    assert "HD95 (px)" in header and "ASSD (px)" in header and "HD undefined" in header
    assert "| 0.00 ± 0.00 |" in good
    cells = [c.strip() for c in none.split("|")]
    assert cells[5] == cells[6] == "—", none  # HD95 and ASSD of an entry where no case defines them
