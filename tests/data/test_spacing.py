"""Voxel spacing of a split's cases (pncd.data.spacing): from NIfTI headers that declare a unit, scaled
to the network's input size; pixels otherwise. Real NIfTI files, loaded through load_split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pncd.data import DataSpec, load_split
from pncd.data.spacing import case_spacing
from data_helpers import save_nifti, save_png


def _nifti(path: Path, vol_rows_cols: np.ndarray, zooms_xyz: tuple[float, float, float] | None, unit: str | None) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.ascontiguousarray(vol_rows_cols.transpose(2, 1, 0)), np.eye(4))
    if zooms_xyz is not None:
        img.header.set_zooms(zooms_xyz)
    if unit is not None:
        img.header.set_xyzt_units(xyz=unit)
    nib.save(img, str(path))


def _data_set(root: Path, cases: dict[str, tuple[tuple[int, int], tuple[float, float, float] | None, str | None]]) -> Path:
    for name, ((rows, cols), zooms, unit) in cases.items():
        img = np.zeros((3, rows, cols), np.uint8)
        img[:, rows // 4 : rows // 2, cols // 4 : cols // 2] = 200
        _nifti(root / "images" / f"{name}.nii.gz", img, zooms, unit)
        _nifti(root / "labels" / f"{name}.nii.gz", (img > 0).astype(np.uint8), zooms, unit)
    (root / "splits.json").write_text(json.dumps({"train": [], "val": [], "test": list(cases)}))
    return root


def test_mm_from_headers_scaled_to_the_input_size(tmp_path):
    # (x, y, z) zooms 0.9 x 0.8 x 5 mm; 64 rows x 48 columns resized to 32 x 32: a row step of
    # 0.8 * 64 / 32 = 1.6 mm, a column step of 0.9 * 48 / 32 = 1.35 mm; the slice step stays 5 mm.
    # A header in metres is converted.
    root = _data_set(tmp_path / "d", {"a": ((64, 48), (0.9, 0.8, 5.0), "mm"),
                                      "b": ((32, 32), (0.001, 0.001, 0.002), "meter")})
    ss = load_split(DataSpec(root=str(root), size=32), "test")
    spacing, unit = case_spacing(ss)
    assert unit == "mm"
    assert spacing["a"] == pytest.approx((5.0, 1.6, 1.35))
    assert spacing["b"] == pytest.approx((2.0, 1.0, 1.0))


def test_unknown_unit_or_2d_images_give_pixels(tmp_path):
    # One case without a declared unit (the identity-affine layout of LGG FLAIR and the phantoms)
    # puts every case in pixels: one report, one unit.
    root = _data_set(tmp_path / "d", {"a": ((32, 32), (0.9, 0.8, 5.0), "mm"), "b": ((32, 32), None, None)})
    spacing, unit = case_spacing(load_split(DataSpec(root=str(root), size=32), "test"))
    assert unit == "px" and spacing == {"a": (1.0, 1.0, 1.0), "b": (1.0, 1.0, 1.0)}
    flat = tmp_path / "png"
    for i in range(2):
        img = np.zeros((16, 16), np.uint8)
        img[4:8, 4:8] = 255
        save_png(flat / "images" / f"c{i}.png", img)
        save_png(flat / "labels" / f"c{i}.png", img)
    (flat / "splits.json").write_text(json.dumps({"train": [], "val": [], "test": ["c0", "c1"]}))
    spacing, unit = case_spacing(load_split(DataSpec(root=str(flat), size=16), "test"))
    assert unit == "px" and set(spacing) == {"c0", "c1"}


def test_a_broken_header_is_named(tmp_path):
    from pncd.data.spacing import nifti_spacing_mm
    from pncd.errors import PncdError

    bad = tmp_path / "x.nii"
    bad.write_bytes(b"not a nifti file at all" * 20)
    with pytest.raises(PncdError, match="x.nii"):
        nifti_spacing_mm(bad)
    good = save_nifti(tmp_path / "y.nii.gz", np.zeros((2, 4, 4), np.uint8))
    assert nifti_spacing_mm(good) is None  # unit "unknown": no spacing
