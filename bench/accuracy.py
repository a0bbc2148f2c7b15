"""Accuracy of an artifact on a whole split, and its comparison with the torch reference.

Predictions and per-case scores come from :mod:`pncd.scoring`; the comparison
pairs cases: absolute and relative differences of the means, the worst per-case Dice drop, a
paired bootstrap interval of the Dice difference (and of the HD95 and ASSD differences, over the
cases where both define them), and how many pixels and slices disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pncd import scoring as evaluation
from pncd.bench.stats import paired_bootstrap


def compare(
    cases: list[dict], ref_cases: list[dict], summary: dict, ref_summary: dict,
    preds: np.ndarray, ref_preds: np.ndarray, n_boot: int = 2000, seed: int = 0,
) -> dict[str, Any]:
    """An artifact against its torch reference (same split, same cases, same order of slices)."""
    ref_by_case = {r["case"]: r for r in ref_cases}
    common = [r for r in cases if r["case"] in ref_by_case]
    if len(common) != len(cases) or len(common) != len(ref_cases):
        raise ValueError("artifact and reference were scored on different cases")
    d_art = np.array([r["dice"] for r in common])
    d_ref = np.array([ref_by_case[r["case"]]["dice"] for r in common])
    drops = d_ref - d_art
    worst = int(np.argmax(drops)) if len(drops) else None
    boot = paired_bootstrap(d_art, d_ref, n_boot=n_boot, seed=seed)
    ref_dice = ref_summary.get("dice")
    out: dict[str, Any] = {
        "dice_diff": _diff(summary.get("dice"), ref_dice),
        "dice_rel": (summary["dice"] / ref_dice) if ref_dice else None,
        "voe_diff": _diff(summary.get("voe"), ref_summary.get("voe")),
        "rvd_diff": _diff(summary.get("rvd"), ref_summary.get("rvd")),
        "abs_rvd_diff": _diff(_abs(summary.get("rvd")), _abs(ref_summary.get("rvd"))),
        "worst_case": common[worst]["case"] if worst is not None else None,
        "worst_case_dice_drop": float(drops[worst]) if worst is not None else None,
        "n_cases_dice_changed": int(np.sum(np.abs(drops) > 1e-12)),
        "dice_diff_boot_mean": boot["mean"],
        "dice_diff_ci_lo": boot["lo"],
        "dice_diff_ci_hi": boot["hi"],
        "bootstrap": {k: boot[k] for k in ("method", "n", "n_boot", "seed", "confidence")},
        **_distance_diffs(common, ref_by_case, summary, ref_summary, n_boot, seed),
    }
    if preds.shape == ref_preds.shape and preds.size:
        per_slice = evaluation.disagreement(preds, ref_preds)
        out["pixel_agreement"] = float(1.0 - per_slice.sum() / preds.size)
        out["n_slices_differ"] = int(np.count_nonzero(per_slice))
    else:
        out["pixel_agreement"] = None
        out["n_slices_differ"] = None
    return out


def _distance_diffs(common: list[dict], ref_by_case: dict[str, dict], summary: dict, ref_summary: dict,
                    n_boot: int, seed: int) -> dict[str, Any]:
    """hd95_diff and assd_diff (artifact − reference means, in the report's unit) and the paired
    bootstrap interval of each over the cases where both sides define it (None without distances)."""
    out: dict[str, Any] = {}
    for k in ("hd95", "assd"):
        pairs = [(r[k], ref_by_case[r["case"]][k]) for r in common
                 if r.get(k) is not None and ref_by_case[r["case"]].get(k) is not None]
        boot = paired_bootstrap([a for a, _ in pairs], [b for _, b in pairs], n_boot=n_boot, seed=seed)
        out.update({f"{k}_diff": _diff(summary.get(k), ref_summary.get(k)),
                    f"{k}_diff_ci_lo": boot["lo"], f"{k}_diff_ci_hi": boot["hi"]})
    return out


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a - b)


def _abs(a: float | None) -> float | None:
    return None if a is None else abs(a)
