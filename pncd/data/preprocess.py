"""Resizing and per-slice intensity normalisation.

- Images are resized to a square ``size`` x ``size`` bilinearly (with antialiasing, so a 256
  -> 128 reduction averages instead of aliasing); masks with nearest-neighbour ("nearest-exact",
  the pixel-centre convention of Pillow and OpenCV), so labels stay labels. Non-square inputs are
  stretched to square.
- ``zscore`` (default): ``(x - mean) / (std + 1e-6)`` over all pixels and channels of the
  slice. MRI intensities have no absolute scale, so per-slice statistics make scans from
  different scanners comparable. A constant slice becomes all zeros.
- ``minmax``: ``(x - min) / (max - min)`` over the slice, to [0, 1]; a constant slice becomes 0.

The same function runs for training, evaluation, export calibration and benchmarking, so every
stage sees identical inputs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-6


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """float32 ``(S, C, H, W)`` -> ``(S, C, size, size)``, bilinear."""
    if x.shape[-2:] == (size, size):
        return np.ascontiguousarray(x, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.numpy()


def resize_masks(m: np.ndarray, size: int) -> np.ndarray:
    """Integer labels ``(S, H, W)`` -> ``(S, size, size)``, nearest neighbour, same dtype."""
    if m.shape[-2:] == (size, size):
        return m
    t = torch.from_numpy(m.astype(np.float32))[:, None]
    out = F.interpolate(t, size=(size, size), mode="nearest-exact")[:, 0]
    return out.numpy().round().astype(m.dtype)


def normalize(x: np.ndarray, method: str) -> np.ndarray:
    """Per-slice normalisation of float32 ``(S, C, H, W)`` (see the module docstring)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    if method == "zscore":
        mean = flat.mean(axis=1)
        std = flat.std(axis=1)
        out = (flat - mean[:, None]) / (std[:, None] + EPS)
    elif method == "minmax":
        lo = flat.min(axis=1)
        span = flat.max(axis=1) - lo
        out = np.where(span[:, None] > 0, (flat - lo[:, None]) / np.maximum(span, EPS)[:, None], 0.0)
    else:
        raise ValueError(f"unknown normalization {method!r}")
    return out.astype(np.float32).reshape(x.shape)


def preprocess(images: np.ndarray, masks: np.ndarray, size: int, normalization: str) -> tuple[np.ndarray, np.ndarray]:
    """Resize then normalise: what every pncd stage feeds a network."""
    return normalize(resize_images(images, size), normalization), resize_masks(masks, size)
