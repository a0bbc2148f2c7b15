"""The bench report's pictures: latency against Dice (with interval bars, the gate's line and a
Dice axis from a sensible floor) and the overlays of the slices where an artifact and its torch
reference disagree most."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pncd.bench.report import KEPT_RATIO


def dice_ci(e: dict[str, Any]) -> float | None:
    """Half-width of the 95% interval of an entry's mean per-case Dice (normal approximation,
    1.96 standard errors over its cases); None without a spread or with fewer than 2 cases."""
    sd, n = e.get("dice_std"), e.get("n_cases")
    return None if sd is None or not n or n < 2 else 1.96 * float(sd) / float(n) ** 0.5


def dice_axis(entries: list[dict[str, Any]], gate_lines: list[float]) -> tuple[float, float]:
    """A Dice axis a person reads at a glance: from a round floor at least 0.2 below the lowest
    point (its interval and the gate lines included) to a round ceiling, within [0, 1], so that a
    difference of 0.004 looks as small as it is."""
    import math

    lows = [e["dice"] - (dice_ci(e) or 0.0) for e in entries] + gate_lines
    highs = [e["dice"] + (dice_ci(e) or 0.0) for e in entries] + gate_lines
    lo = max(0.0, math.floor((min(lows) - 0.2) * 10) / 10)
    hi = min(1.0, math.ceil((max(highs) + 0.05) * 10) / 10)
    return lo, max(hi, lo + 0.1)


def plot_latency_dice(entries: list[dict[str, Any]], path: Path, min_ref_ratio: float = KEPT_RATIO) -> bool:
    """Median batch-1 latency (x) against mean Dice (y), one labelled point per entry with its 95%
    interval over cases, the gate's floor per torch reference (``min_ref_ratio`` times its Dice,
    dashed) and a Dice axis from a sensible floor (:func:`dice_axis`)."""
    pts = [e for e in entries if e.get("latency_ms_median") is not None and e.get("dice") is not None]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Points of one model often sit on top of each other (same Dice): each gets its own colour and
    # marker and is named in a legend beside the axes, so no label can cover another.
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    markers = "os^vD<>pPX*h"
    tab10 = plt.get_cmap("tab10")
    colors = [tab10(i) for i in range(10)]
    for k, e in enumerate(pts):
        ref = e["kind"] == "reference"
        color = "black" if ref else colors[k % len(colors)]
        ax.errorbar([e["latency_ms_median"]], [e["dice"]], yerr=[[dice_ci(e) or 0.0], [dice_ci(e) or 0.0]],
                    fmt="none", ecolor=color, elinewidth=1, capsize=3, alpha=0.6, zorder=2)
        ax.scatter([e["latency_ms_median"]], [e["dice"]], marker="s" if ref else markers[k % len(markers)],
                   color=color, s=48, alpha=0.85, zorder=3,
                   label=f"{e['name']} ({e.get('compute_precision') or e.get('precision')})")
    gates = [e["dice"] * min_ref_ratio for e in pts if e["kind"] == "reference"]
    for n, g in enumerate(gates):
        ax.axhline(g, color="firebrick", linestyle="--", linewidth=1, zorder=1,
                   label=f"gate: {min_ref_ratio:.0%} of torch Dice" if n == 0 else None)
    lat = [e["latency_ms_median"] for e in pts]
    if min(lat) > 0 and max(lat) / min(lat) > 20:
        ax.set_xscale("log")
    ax.margins(x=0.1)
    ax.set_ylim(*dice_axis(pts, gates))
    ax.set_xlabel("median latency, batch 1 (ms)")
    ax.set_ylabel("mean Dice per case (95% CI)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return True


PANEL_TITLES = ["image + ground truth", "reference", "artifact", "disagreement"]
REF_ONLY, ART_ONLY, PRED = (255, 40, 40), (40, 120, 255), (255, 200, 0)
PANEL_LEGEND = [((0, 220, 0), "ground truth"), (PRED, "prediction"), (REF_ONLY, "reference only"),
                (ART_ONLY, "artifact only"), ((150, 150, 150), "both")]


def panel_titles(gt: np.ndarray, ref: np.ndarray, art: np.ndarray) -> list[str]:
    """:data:`PANEL_TITLES` with each prediction's Dice against the ground truth on this slice."""
    from pncd.viz import slice_dice

    return [PANEL_TITLES[0], f"reference (Dice {slice_dice(ref, gt):.3f})", f"artifact (Dice {slice_dice(art, gt):.3f})",
            PANEL_TITLES[3]]


def disagreement_panel(image: np.ndarray, gt: np.ndarray, ref: np.ndarray, art: np.ndarray) -> np.ndarray:
    """RGB uint8: [image + GT outline | reference | artifact (each with the GT outline in green and
    its prediction's in yellow) | disagreement map (red: reference only, blue: artifact only)]."""
    from pncd.viz import GT_COLOR, difference, outline, to_uint8

    g = to_uint8(image)
    base = np.stack([g, g, g], axis=-1)
    edge = outline(gt > 0)
    with_gt = base.copy()
    with_gt[edge] = GT_COLOR
    ref_p, art_p = with_gt.copy(), with_gt.copy()
    ref_p[outline(ref > 0)] = PRED
    art_p[outline(art > 0)] = PRED
    diff = difference(base, ref, art, REF_ONLY, ART_ONLY)
    sep = np.full((g.shape[0], 2, 3), 255, np.uint8)
    return np.concatenate([with_gt, sep, ref_p, sep, art_p, sep, diff], axis=1)
