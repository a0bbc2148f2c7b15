"""File writers shared by the data layer tests (imported as a plain module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def save_png(path: Path, arr: np.ndarray, fmt: str | None = None, **kw) -> Path:
    """Save ``arr`` (H, W) or (H, W, 3) uint8/uint16/bool with Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **kw)
    return path


def save_nifti(path: Path, vol_rows_cols: np.ndarray) -> Path:
    """Save (S, H, W) as NIfTI with the (x = column, y = row, z = slice) axes convention."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol_rows_cols.transpose(2, 1, 0)), np.eye(4)), str(path))
    return path


def lesion_image(h: int, w: int, box: tuple[int, int, int, int], rgb: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A dark-gray image with a bright rectangle ``box`` = (r0, r1, c0, c1), and its 0/1 mask."""
    img = np.full((h, w), 40, np.uint8)
    img[box[0] : box[1], box[2] : box[3]] = 220
    mask = np.zeros((h, w), np.uint8)
    mask[box[0] : box[1], box[2] : box[3]] = 1
    if rgb:
        img = np.stack([img, img // 2, img // 4], axis=-1)
    return img, mask
