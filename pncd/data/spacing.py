"""Voxel spacing of a SliceSet's cases at the network's input size: the units of HD95 and ASSD.

A case's spacing is ``(slice, row, column)``, read from the NIfTI header of its image file
(``pixdim``) where the header declares its spatial unit (``xyzt_units``: metre, millimetre or
micrometre; converted to mm), and scaled to the resized slices: the row spacing times the
original rows over ``size``, the column spacing times the original columns over ``size``
(:mod:`pncd.data.preprocess` stretches every slice to ``size`` x ``size``); the slice spacing
stays. Distances are then in ``"mm"``.

Where any case has no such header (2-D images, a case of several files, or a NIfTI whose unit
is "unknown", as LGG FLAIR's and the synthetic phantoms' are: their affine is the identity),
every case is measured in ``"px"``: pixels at the network's input size, slices one pixel apart;
one report holds one unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pncd.data.readers import is_nifti
from pncd.errors import PncdError

__all__ = ["case_spacing", "nifti_spacing_mm"]

_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 0.001}


def nifti_spacing_mm(path: Path) -> tuple[tuple[float, float, float], tuple[int, int]] | None:
    """``((slice, row, column) spacing in mm, (rows, columns))`` of a NIfTI file, from its header
    alone; None where the header declares no spatial unit or has fewer than 3 axes."""
    import nibabel as nib

    try:
        header: Any = nib.load(str(path)).header
        unit = header.get_xyzt_units()[0]
        zooms = [float(z) for z in header.get_zooms()[:3]]
        shape = tuple(int(n) for n in header.get_data_shape())
    except Exception as e:  # nibabel raises many types for a broken header
        raise PncdError(f"{path}: its NIfTI header cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        "replace the file") from None
    if unit not in _TO_MM or len(zooms) < 3 or len(shape) < 2 or min(zooms) <= 0:
        return None
    k = _TO_MM[unit]
    return (zooms[2] * k, zooms[1] * k, zooms[0] * k), (shape[1], shape[0])  # NIfTI: (x = column, y = row, z)


def case_spacing(sliceset: Any) -> tuple[dict[str, tuple[float, float, float]], str]:
    """``({case: (slice, row, column) spacing}, unit)`` of a SliceSet's cases at its ``spec.size``
    (rules: the module docstring); unit ``"mm"`` where every case has a NIfTI header with a
    spatial unit, else ``"px"`` with spacing 1 for every case."""
    size = int(sliceset.spec.size)
    files: dict[str, set[str]] = {}
    for case, src in zip(sliceset.case_ids, sliceset.sources):
        files.setdefault(case, set()).add(src)
    if not files:
        return {}, "px"
    out: dict[str, tuple[float, float, float]] = {}
    for case, srcs in files.items():
        path = Path(next(iter(srcs)))
        found = nifti_spacing_mm(path) if len(srcs) == 1 and is_nifti(path) else None
        if found is None:
            return {c: (1.0, 1.0, 1.0) for c in files}, "px"
        (dz, dy, dx), (rows, cols) = found
        out[case] = (dz, dy * rows / size, dx * cols / size)
    return out, "mm"
