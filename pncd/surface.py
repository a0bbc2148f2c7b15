"""Surface distances of two binary volumes: HD95 and ASSD, through MedPy, with fixed empty rules.

- **HD95**: the 95th percentile of the distances from each surface voxel of one mask to the
  nearest surface voxel of the other, both directions pooled (``medpy.metric.binary.hd95``);
- **ASSD**: the mean of those distances, both directions pooled (``medpy.metric.binary.assd``).

A surface voxel is a foreground voxel with a face neighbour (4-neighbourhood in 2-D, 6 in 3-D)
outside the mask, or on the array's edge. Distances are Euclidean, in the units of ``spacing``
(one value per axis, slices first: ``(slice, row, column)``); without it, in voxels.

Empty masks, which a lesion data set has many of, follow fixed rules:

- both empty: HD95 = ASSD = 0 (nothing to miss);
- exactly one empty: undefined (``None``): there is no surface to measure a distance to. Callers
  count these and leave them out of means; no large stand-in value is made up.

Cost: the distance transform runs on the bounding box of the two masks only (exact: every
surface voxel lies inside it, and a foreground voxel on the box's edge has a background voxel
outside it either way), so a small lesion in a large volume costs little.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["hd95", "assd", "surface_distances"]


def _box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of ``a | b`` (both non-empty)."""
    either = a | b
    out = []
    for axis in range(either.ndim):
        other = tuple(i for i in range(either.ndim) if i != axis)
        hit = np.flatnonzero(either.any(axis=other))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def _check(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred).astype(bool, copy=False)
    g = np.asarray(gt).astype(bool, copy=False)
    if p.shape != g.shape:
        raise ValueError(f"pred shape {p.shape} differs from gt shape {g.shape}")
    if spacing is not None:
        s = np.asarray(spacing, dtype=np.float64)
        if s.shape != (p.ndim,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(f"spacing {tuple(spacing)} must hold one positive number per axis of {p.shape}")
    return p, g


def surface_distances(pred: np.ndarray, gt: np.ndarray,
                      spacing: Sequence[float] | None = None) -> tuple[float | None, float | None]:
    """``(HD95, ASSD)`` of two binary arrays of one shape (2-D or 3-D), in the units of
    ``spacing`` (per axis; None: voxels). Both empty: ``(0.0, 0.0)``; exactly one empty:
    ``(None, None)`` (undefined)."""
    p, g = _check(pred, gt, spacing)
    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return 0.0, 0.0
    if has_p != has_g:
        return None, None
    from medpy.metric.binary import assd as _assd, hd95 as _hd95  # scipy.stats: imported when needed

    box = _box(p, g)
    p, g = p[box], g[box]
    sp = None if spacing is None else tuple(float(v) for v in spacing)
    return float(_hd95(p, g, voxelspacing=sp)), float(_assd(p, g, voxelspacing=sp))


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None) -> float | None:
    """95th-percentile symmetric Hausdorff distance (0 when both are empty, None when one is)."""
    return surface_distances(pred, gt, spacing)[0]


def assd(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None) -> float | None:
    """Average symmetric surface distance (0 when both are empty, None when one is)."""
    return surface_distances(pred, gt, spacing)[1]
