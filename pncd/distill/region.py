"""Class-region vectors of a feature map (PNCD eq. 5), shared by RD and PNSCD.

For a feature map ``e`` (C x h x w) and the label map resized to (h, w) with nearest
neighbour, the region vector of class k is the masked mean

    R_k = sum_j e_j * m_kj / (sum_j m_kj + eps)

where ``m_k`` is the one-hot mask of class k at the feature's size. A class counts as present in
an image when it keeps at least one pixel at that size (a small lesion can vanish at stride 8;
then its region vector is 0 and it is left out by the losses).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def resize_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of integer labels (B, H, W) to ``size``; returns int64 (B, h, w)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.long()
    out = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")
    return out[:, 0].long()


def class_masks(labels: torch.Tensor, size: Sequence[int], num_classes: int) -> torch.Tensor:
    """One-hot class masks at ``size``: float32 (B, K, h*w) (labels resized with nearest)."""
    lab = resize_labels(labels, size).flatten(1)  # (B, h*w)
    classes = torch.arange(num_classes, device=lab.device)
    return (lab[:, None, :] == classes[None, :, None]).float()


def region_vectors_from_masks(
    feat: torch.Tensor, masks: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region vectors (B, K, C) and ``present`` (B, K) from masks made by :func:`class_masks`."""
    with torch.autocast(device_type=feat.device.type, enabled=False):
        # (B, K, N) @ (B, N, C): this orientation is several times faster than (B, C, N) @ (B, N, K).
        sums = torch.bmm(masks, feat.float().flatten(2).transpose(1, 2))
        counts = masks.sum(dim=2)  # (B, K)
        vecs = sums / (counts + eps).unsqueeze(-1)
    return vecs, counts > 0


def region_vectors(
    feat: torch.Tensor, labels: torch.Tensor, num_classes: int, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region vectors ``(B, K, C)`` (float32) and a ``present`` mask ``(B, K)`` (bool).

    ``feat`` is (B, C, h, w) in any float dtype; ``labels`` (B, H, W) holds class indices in
    [0, num_classes). One batched matrix product, no loop over pixels or classes.
    """
    if feat.ndim != 4:
        raise ValueError(f"expected a feature map (B, C, h, w), got shape {tuple(feat.shape)}")
    if labels.ndim != 3 or labels.shape[0] != feat.shape[0]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match features {tuple(feat.shape)}")
    return region_vectors_from_masks(feat, class_masks(labels, feat.shape[-2:], num_classes), eps)
