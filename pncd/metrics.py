"""Segmentation metrics (the PNCD paper's section 4.3): Dice, VOE, RVD and a per-case accumulator.

Standard definitions, with P the predicted and G the reference foreground:

- Dice = 2|P n G| / (|P| + |G|)
- VOE  = 1 - |P n G| / |P u G|   (the paper's eq. 12 prints |P| + |G| under VOE and its tables
  show negative VOE; the standard form is used here)
- RVD  = (|P| - |G|) / |G|        (signed, as medpy's ``ravd``)

Empty cases, which a lesion data set has many of, follow fixed rules and are always counted:

- P and G both empty: Dice 1, VOE 0, RVD 0;
- G empty, P not: Dice 0, VOE 1, RVD undefined (``None``): left out of RVD means, counted in
  Dice and VOE means.

"Per case" means per patient volume: :class:`SegMetrics` sums voxel counts over all slices of a
case (they may arrive in pieces, across batches) and scores the 3-D volume, which is not the
mean of per-slice scores. Multi-class labels score each foreground class 1..K-1 one-vs-rest; a
case's score is the mean over its foreground classes (for 2 classes, just the lesion).

Surface distances (``SegMetrics(distances=True)``; :mod:`pncd.surface`, through MedPy): HD95 (the
95th percentile of the symmetric surface distances) and ASSD (their mean), per case on the
case's slices stacked as one volume, in the units of the case's voxel spacing (``"mm"`` where
the data set's NIfTI headers declare it, else ``"px"``: pixels at the network's input size,
slices one pixel apart). Their empty rules:

- P and G both empty: HD95 = ASSD = 0;
- exactly one of them empty: undefined (``None``): counted (``n_hd_undefined``) and left out of
  the HD95 and ASSD means, never replaced by a made-up large distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Counts",
    "confusion",
    "dice",
    "voe",
    "rvd",
    "scores_from_counts",
    "SegMetrics",
    "DISTANCE_UNITS",
]

DISTANCE_UNITS = ("mm", "px")  # what HD95 and ASSD are measured in: voxel spacing, or pixels


@dataclass(frozen=True)
class Counts:
    """Voxel counts of one binary comparison: |P n G|, |P| and |G|."""

    intersection: int
    pred: int
    gt: int

    @property
    def union(self) -> int:
        return self.pred + self.gt - self.intersection


def confusion(pred: np.ndarray, gt: np.ndarray) -> Counts:
    """Count |P n G|, |P|, |G| of two boolean (or 0/nonzero) arrays of the same shape."""
    p = np.asarray(pred).astype(bool, copy=False)
    g = np.asarray(gt).astype(bool, copy=False)
    if p.shape != g.shape:
        raise ValueError(f"pred shape {p.shape} differs from gt shape {g.shape}")
    return Counts(
        intersection=int(np.count_nonzero(p & g)),
        pred=int(np.count_nonzero(p)),
        gt=int(np.count_nonzero(g)),
    )


def _scores(intersection: ArrayLike, pred: ArrayLike, gt: ArrayLike) -> tuple[np.ndarray, ...]:
    """Vectorised Dice, VOE, RVD from count arrays; RVD is NaN where undefined (G empty, P not)."""
    inter = np.asarray(intersection, dtype=np.float64)
    n_pred = np.asarray(pred, dtype=np.float64)
    n_gt = np.asarray(gt, dtype=np.float64)
    total = n_pred + n_gt
    union = total - inter
    both_empty = total == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(both_empty, 1.0, 2.0 * inter / np.where(both_empty, 1.0, total))
        v = np.where(both_empty, 0.0, 1.0 - inter / np.where(both_empty, 1.0, union))
        r = np.where(
            n_gt > 0, (n_pred - n_gt) / np.where(n_gt > 0, n_gt, 1.0), np.where(both_empty, 0.0, np.nan)
        )
    return d, v, r


def scores_from_counts(intersection: int, pred: int, gt: int) -> dict[str, float | None]:
    """Dice, VOE and RVD (``None`` where undefined) of one set of counts."""
    d, v, r = _scores(intersection, pred, gt)
    return {"dice": float(d), "voe": float(v), "rvd": None if np.isnan(r) else float(r)}


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two boolean arrays of any shape (1.0 when both are empty)."""
    c = confusion(pred, gt)
    return scores_from_counts(c.intersection, c.pred, c.gt)["dice"]  # type: ignore[return-value]


def voe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Volumetric overlap error ``1 - |P n G| / |P u G|`` (0.0 when both are empty)."""
    c = confusion(pred, gt)
    return scores_from_counts(c.intersection, c.pred, c.gt)["voe"]  # type: ignore[return-value]


def rvd(pred: np.ndarray, gt: np.ndarray) -> float | None:
    """Signed relative volume difference ``(|P| - |G|) / |G|``; ``None`` when G is empty and P is not."""
    c = confusion(pred, gt)
    return scores_from_counts(c.intersection, c.pred, c.gt)["rvd"]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on an accelerator
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _nanmean(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else None


def _nanstd(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(x.std()) if x.size else None


def _opt(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


class SegMetrics:
    """Accumulate per-slice voxel counts per case; score cases as 3-D volumes.

    Only counts are kept: for each slice and foreground class, ``(|P n G|, |P|, |G|)``. Cases may
    arrive in pieces, in any order, across batches; slices of one case are kept in arrival order.

    With ``distances=True`` the label maps are kept too, and each case also gets HD95 and ASSD
    (:mod:`pncd.surface`) on its slices stacked in arrival order as one volume, with
    ``spacing[case]`` = ``(slice, row, column)`` spacing in ``unit`` ("mm" or "px"; a case
    missing from ``spacing`` is measured in voxels, which only ``unit="px"`` allows).

    Example::

        m = SegMetrics(num_classes=2)
        for case_ids, pred, gt in batches:       # pred, gt: (B, H, W) integer labels
            for i, case in enumerate(case_ids):
                m.update(case, pred[i], gt[i])
        m.summary()["dice"]
    """

    def __init__(self, num_classes: int = 2, *, distances: bool = False,
                 spacing: Mapping[str, Sequence[float]] | None = None, unit: str = "px") -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 (background + one class), got {num_classes}")
        if unit not in DISTANCE_UNITS:
            raise ValueError(f"unit must be one of {DISTANCE_UNITS}, got {unit!r}")
        self.num_classes = int(num_classes)
        self.distances = bool(distances)
        self.spacing = {str(k): tuple(float(x) for x in v) for k, v in (spacing or {}).items()}
        self.unit = unit
        self._cases: dict[str, list[np.ndarray]] = {}
        self._labels: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}  # distances: label maps per case
        self._dist: dict[str, np.ndarray] = {}  # case -> (K-1, 2) HD95 and ASSD per class, NaN where undefined

    # -- accumulation -------------------------------------------------------------------------------
    def update(self, case_id: str, pred: Any, gt: Any) -> None:
        """Add slices ``pred``/``gt`` (integer labels, (S, H, W) or (H, W)) to case ``case_id``."""
        p = _to_numpy(pred)
        g = _to_numpy(gt)
        if p.shape != g.shape:
            raise ValueError(f"case {case_id!r}: pred shape {p.shape} differs from gt shape {g.shape}")
        if p.ndim == 2:
            p, g = p[None], g[None]
        if p.ndim != 3:
            raise ValueError(f"case {case_id!r}: expected (S, H, W) or (H, W) label maps, got shape {p.shape}")
        k = self.num_classes
        s = p.shape[0]
        maps = (p, g)
        p = p.astype(np.int64, copy=False).reshape(s, -1)
        g = g.astype(np.int64, copy=False).reshape(s, -1)
        for name, a in (("pred", p), ("gt", g)):
            if a.size and (a.min() < 0 or a.max() >= k):
                raise ValueError(
                    f"case {case_id!r}: {name} labels must lie in [0, {k - 1}], "
                    f"found [{a.min()}, {a.max()}]"
                )
        # One bincount gives every slice's K x K confusion matrix (rows = gt, columns = pred).
        idx = (np.arange(s, dtype=np.int64)[:, None] * k + g) * k + p
        cm = np.bincount(idx.ravel(), minlength=s * k * k).reshape(s, k, k)
        fg = np.arange(1, k)
        counts = np.stack([cm[:, fg, fg], cm.sum(axis=1)[:, 1:], cm.sum(axis=2)[:, 1:]], axis=-1)
        self._cases.setdefault(str(case_id), []).append(counts)
        if self.distances:
            small = np.uint8 if k <= 256 else np.int32
            self._labels.setdefault(str(case_id), []).append((maps[0].astype(small), maps[1].astype(small)))
            self._dist.pop(str(case_id), None)

    def _counts(self, case: str) -> np.ndarray:
        parts = self._cases[case]
        if len(parts) > 1:  # compact so repeated per_case() calls stay cheap
            self._cases[case] = parts = [np.concatenate(parts, axis=0)]
        return parts[0]

    def _distances(self, case: str) -> np.ndarray:
        """(K-1, 2): HD95 and ASSD of each foreground class of ``case``'s volume (NaN: undefined)."""
        if case not in self._dist:
            from pncd.surface import surface_distances

            parts = self._labels[case]
            p, g = (np.concatenate([x[i] for x in parts]) for i in (0, 1))
            self._labels[case] = [(p, g)]
            sp = self.spacing.get(case)
            if sp is None and self.unit != "px":
                raise ValueError(f"case {case!r} has no spacing, and distances in {self.unit} need one")
            out = np.full((self.num_classes - 1, 2), np.nan)
            for c in range(1, self.num_classes):
                h, a = surface_distances(p == c, g == c, sp)
                if h is not None and a is not None:
                    out[c - 1] = (h, a)
            self._dist[case] = out
        return self._dist[case]

    def _distance_row(self, case: str) -> dict[str, Any]:
        """A case's hd95 and assd (means over its classes where defined; None where none is) and spacing."""
        d = self._distances(case)
        sp = self.spacing.get(case)
        return {"hd95": _nanmean(d[:, 0]), "assd": _nanmean(d[:, 1]), "spacing": list(sp) if sp is not None else None}

    # -- scoring ------------------------------------------------------------------------------------
    def _row(self, counts: np.ndarray) -> dict:
        """Scores of counts ``(K-1, 3)``: per class, then the mean over foreground classes."""
        inter, n_pred, n_gt = counts[:, 0], counts[:, 1], counts[:, 2]
        d, v, r = _scores(inter, n_pred, n_gt)
        row: dict[str, Any] = {
            "dice": float(d.mean()),
            "voe": float(v.mean()),
            "rvd": _nanmean(r),
            "gt_voxels": int(n_gt.sum()),
            "pred_voxels": int(n_pred.sum()),
            "intersection": int(inter.sum()),
            "empty_gt": bool(n_gt.sum() == 0),
            "empty_both": bool(n_gt.sum() == 0 and n_pred.sum() == 0),
        }
        if self.num_classes > 2:
            row["classes"] = {
                str(c + 1): {
                    "dice": float(d[c]),
                    "voe": float(v[c]),
                    "rvd": _opt(r[c]),
                    "gt_voxels": int(n_gt[c]),
                    "pred_voxels": int(n_pred[c]),
                }
                for c in range(self.num_classes - 1)
            }
        return row

    def per_case(self) -> list[dict]:
        """One dict per case (in first-arrival order), scored on the case's 3-D volume.

        Keys: case, n_slices, dice, voe, rvd (``None`` when undefined), gt_voxels, pred_voxels,
        intersection, empty_gt, empty_both; with more than 2 classes also ``classes`` (per class).
        With distances also hd95, assd (``None`` when undefined: exactly one mask empty) and
        spacing (``(slice, row, column)`` in the summary's ``hd95_unit``; ``None``: voxels),
        and per class hd95 and assd.
        """
        rows = []
        for case in self._cases:
            counts = self._counts(case)
            row = {"case": case, "n_slices": int(counts.shape[0]), **self._row(counts.sum(axis=0))}
            if self.distances:
                row.update(self._distance_row(case))
                for c, cls in enumerate((row.get("classes") or {}).values()):
                    cls["hd95"], cls["assd"] = (_opt(x) for x in self._distances(case)[c])
            rows.append(row)
        return rows

    def per_slice(self) -> list[dict]:
        """One dict per slice (case, slice index in arrival order, and the per-case keys)."""
        rows = []
        for case in self._cases:
            for i, counts in enumerate(self._counts(case)):
                rows.append({"case": case, "slice": i, **self._row(counts)})
        return rows

    def summary(self) -> dict:
        """Means and standard deviations (population, ddof=0) over cases, and the empty-case counts.

        Keys: n_cases, n_slices, dice, dice_std, voe, voe_std, rvd, rvd_std (over cases where RVD
        is defined); n_rvd_defined, n_rvd_undefined, n_empty_gt, n_empty_both (counted over
        (case, foreground class) pairs: for 2 classes, cases); dice_lesion_slices (mean Dice over
        (slice, class) pairs whose reference has that class; for 2 classes, slices with lesion)
        and n_lesion_slices; with more than 2 classes also ``classes``: per-class means.
        With distances also hd95, hd95_std, assd, assd_std (over cases where defined), n_hd_defined
        and n_hd_undefined (over (case, class) pairs) and hd95_unit (of HD95 and ASSD).
        Undefined means (nothing to average) are ``None``.
        """
        cases = list(self._cases)
        k1 = self.num_classes - 1
        if cases:
            per_case = np.stack([self._counts(c).sum(axis=0) for c in cases])  # (N, K-1, 3)
            slices = np.concatenate([self._counts(c) for c in cases], axis=0)  # (S, K-1, 3)
        else:
            per_case = np.zeros((0, k1, 3), dtype=np.int64)
            slices = np.zeros((0, k1, 3), dtype=np.int64)
        d, v, r = _scores(per_case[..., 0], per_case[..., 1], per_case[..., 2])  # (N, K-1)
        with np.errstate(invalid="ignore"):
            defined = ~np.isnan(r)
            case_r = np.where(defined.any(axis=1), np.nansum(r, axis=1) / np.maximum(defined.sum(axis=1), 1), np.nan)
        case_d, case_v = d.mean(axis=1), v.mean(axis=1)
        sd, _, _ = _scores(slices[..., 0], slices[..., 1], slices[..., 2])
        lesion = slices[..., 2] > 0
        gt_empty = per_case[..., 2] == 0
        out: dict[str, Any] = {
            "n_cases": len(cases),
            "n_slices": int(slices.shape[0]),
            "dice": _nanmean(case_d),
            "dice_std": _nanstd(case_d),
            "voe": _nanmean(case_v),
            "voe_std": _nanstd(case_v),
            "rvd": _nanmean(case_r),
            "rvd_std": _nanstd(case_r),
            "n_rvd_defined": int(defined.sum()),
            "n_rvd_undefined": int((~defined).sum()),
            "n_empty_gt": int(gt_empty.sum()),
            "n_empty_both": int((gt_empty & (per_case[..., 1] == 0)).sum()),
            "dice_lesion_slices": float(sd[lesion].mean()) if lesion.any() else None,
            "n_lesion_slices": int(lesion.sum()),
        }
        dist = self._distance_summary(cases, out) if self.distances else None
        if self.num_classes > 2:
            out["classes"] = {
                str(c + 1): {
                    **({} if dist is None else {"hd95": _nanmean(dist[:, c, 0]), "assd": _nanmean(dist[:, c, 1])}),
                    "dice": _nanmean(d[:, c]),
                    "voe": _nanmean(v[:, c]),
                    "rvd": _nanmean(r[:, c]),
                    "dice_lesion_slices": float(sd[lesion[:, c], c].mean()) if lesion[:, c].any() else None,
                }
                for c in range(k1)
            }
        return out

    def _distance_summary(self, cases: list[str], out: dict[str, Any]) -> np.ndarray:
        """Add the HD95 and ASSD means to ``out``; returns the (N, K-1, 2) per-class distances."""
        dist = np.stack([self._distances(c) for c in cases]) if cases else np.zeros((0, self.num_classes - 1, 2))
        defined: np.ndarray = ~np.isnan(dist[..., 0])  # (N, K-1)
        any_class = np.asarray(defined.any(axis=1))[:, None]
        with np.errstate(invalid="ignore"):
            per_case = np.where(any_class, np.nansum(dist, axis=1) / np.maximum(defined.sum(axis=1), 1)[:, None], np.nan)
        out.update(hd95=_nanmean(per_case[:, 0]), hd95_std=_nanstd(per_case[:, 0]), assd=_nanmean(per_case[:, 1]),
                   assd_std=_nanstd(per_case[:, 1]), n_hd_defined=int(defined.sum()),
                   n_hd_undefined=int((~defined).sum()), hd95_unit=self.unit)
        return dist
