"""Images for an export: INT8 calibration (training split) and the parity check (held-out split).

Both come from the data set the run was trained on, preprocessed exactly as in training (the
run's ``DataSpec``), so calibration ranges and parity numbers describe real inputs. Images are
picked evenly spaced over the split (deterministic, spread over all cases rather than the first
case's slices).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pncd.data.images import ImageSet, evenly_spaced
from pncd.errors import PncdError

CALIB_METHODS = ("minmax", "entropy", "percentile")


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"256x192"`` -> (256, 192), ``"128"`` -> (128, 128), None -> None."""
    if text is None or str(text).strip() == "":
        return None
    t = str(text).lower().replace(" ", "")
    parts = t.split("x")
    try:
        hw = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else None
    except ValueError:
        hw = None
    if hw is None or min(hw) <= 0:
        raise PncdError(f"--input-size {text!r} is not HxW (e.g. 256x256) or one number")
    return hw


def load_images(data: dict[str, Any], split: str, count: int, size: tuple[int, int],
                root: str | None = None) -> ImageSet:
    """``count`` evenly spaced slices of ``split``, preprocessed by the run's data spec at ``size``.

    ``root`` overrides the spec's data root. A square ``size`` is read at that size by the data
    layer; another shape is resized from the spec's size (bilinear images, nearest labels).
    """
    from pncd.data import DataSpec, load_split, resolve_root

    d = dict(data)
    if root is not None:
        d["root"] = str(root)
    h, w = size
    if h == w:
        d["size"] = h
    spec = DataSpec.from_dict(d)
    ss = load_split(spec, split)
    idx = evenly_spaced(len(ss), count)
    images, masks = ss.images[idx], ss.masks[idx]
    if images.shape[-2:] != (h, w):
        images, masks = _resize(images, masks, h, w)
    return ImageSet(
        images=np.ascontiguousarray(images, dtype=np.float32),
        masks=np.ascontiguousarray(masks, dtype=np.int64),
        case_ids=[ss.case_ids[i] for i in idx],
        split=split,
        root=str(resolve_root(spec.root)),
        total=len(ss),
        info={"selection": "evenly spaced over the split", "spec": spec.to_dict()},
    )


def _resize(images: np.ndarray, masks: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    import torch
    import torch.nn.functional as F

    x = F.interpolate(torch.from_numpy(np.ascontiguousarray(images)), size=(h, w), mode="bilinear", align_corners=False)
    m = F.interpolate(torch.from_numpy(np.ascontiguousarray(masks))[:, None].float(), size=(h, w), mode="nearest")
    return x.numpy(), m[:, 0].long().numpy()


def held_out_images(data: dict[str, Any], count: int, size: tuple[int, int]) -> ImageSet:
    """Held-out images for the parity check: the validation split, else the test split."""
    errors = []
    for split in ("val", "test"):
        try:
            return load_images(data, split, count, size)
        except PncdError as e:
            errors.append(f"{split}: {e}")
    raise PncdError(
        "the parity check needs held-out images, but the run's data set has no usable val or test split ("
        + "; ".join(errors) + ")"
    )


def calibration_images(data: dict[str, Any], count: int, size: tuple[int, int], calib_data: str | None) -> ImageSet:
    """``count`` training images of the run's data set (or of ``calib_data``) for INT8 calibration."""
    from pncd.data import DataSpec

    if count < 1:
        raise PncdError(f"--calib-size {count} is invalid; use at least 1 image (default 128)")
    root = calib_data if calib_data is not None else DataSpec.from_dict(data).root
    try:
        return load_images(data, "train", count, size, root=calib_data)
    except PncdError as e:
        where = root if root is not None else "the built-in synthetic data set"
        raise PncdError(
            f"INT8 needs calibration images, but no train split was found in {where} ({e}); "
            "pass --calib-data DIR with training images"
        ) from None


def calibration_record(images: ImageSet, method: str, backend_method: str) -> dict[str, Any]:
    """The manifest's calibration entry."""
    return {
        "data_root": images.root,
        "split": images.split,
        "count": len(images),
        "split_size": images.total,
        "selection": images.info.get("selection"),
        "method": method,
        "backend_method": backend_method,
    }
