"""Accuracy of a runner on a whole split, and its comparison with the torch reference.

Scores are per case (patient volume) with :class:`pncd.metrics.SegMetrics`; the comparison
pairs cases: absolute and relative differences of the means, the worst per-case Dice drop, a
paired bootstrap interval of the Dice difference, and how many pixels and slices disagree.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from pncd.bench.stats import paired_bootstrap
from pncd.metrics import SegMetrics


def to_labels(logits: np.ndarray) -> np.ndarray:
    """(B, K, H, W) logits -> (B, H, W) uint8 labels; a single logit channel is read as [0, z]."""
    logits = np.asarray(logits)
    if logits.ndim != 4:
        raise ValueError(f"expected (B, K, H, W) logits, got shape {logits.shape}")
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.uint8)
    return logits.argmax(axis=1).astype(np.uint8)


def predict_labels(
    infer: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int = 8, desc: str = "predicting",
    progress: bool = True,
) -> np.ndarray:
    """Label maps for every image, ``batch`` at a time (1 at a time if the model rejects a batch)."""
    out = []
    i = 0
    bar = tqdm(total=len(images), desc=desc, unit="img", leave=False, disable=not progress or None)
    try:
        while i < len(images):
            x = np.ascontiguousarray(images[i : i + batch], dtype=np.float32)
            try:
                out.append(to_labels(infer(x)))
            except Exception:
                if batch == 1:
                    raise
                batch = 1  # a fixed-batch graph: fall back to single images for the rest
                continue
            i += len(x)
            bar.update(len(x))
    finally:
        bar.close()
    return np.concatenate(out, axis=0) if out else np.zeros((0,) + images.shape[2:], np.uint8)


def score(preds: np.ndarray, masks: np.ndarray, case_ids: list[str], num_classes: int) -> tuple[dict, list[dict]]:
    """(summary, per-case rows) of label maps against the ground truth, per patient volume."""
    if preds.shape != masks.shape:
        raise ValueError(f"predictions {preds.shape} and masks {masks.shape} differ in shape")
    m = SegMetrics(num_classes=num_classes)
    ids = np.asarray(case_ids)
    for case in dict.fromkeys(case_ids):
        sel = ids == case
        m.update(case, preds[sel], masks[sel])
    return m.summary(), m.per_case()


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
    }
    if preds.shape == ref_preds.shape and preds.size:
        per_slice = disagreement(preds, ref_preds)
        out["pixel_agreement"] = float(1.0 - per_slice.sum() / preds.size)
        out["n_slices_differ"] = int(np.count_nonzero(per_slice))
    else:
        out["pixel_agreement"] = None
        out["n_slices_differ"] = None
    return out


def disagreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels whose labels differ, counted per slice: (N,)."""
    return (a != b).reshape(len(a), -1).sum(axis=1)


def worst_slices(a: np.ndarray, b: np.ndarray, k: int) -> list[int]:
    """Indices of up to ``k`` slices where ``a`` and ``b`` disagree most (ties: lower index first)."""
    counts = disagreement(a, b)
    order = np.argsort(-counts, kind="stable")
    return [int(i) for i in order[:k] if counts[i] > 0]


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a - b)


def _abs(a: float | None) -> float | None:
    return None if a is None else abs(a)
