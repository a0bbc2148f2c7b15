"""Region affinity Distillation (RD, PNCD eqs. 5-7): match cosine affinities between class regions.

For each tap pair and each network separately (at its own feature size):

1. region vectors ``R_k`` of every class k (eq. 5; :func:`pncd.distill.region.region_vectors`);
2. affinity ``V_ij = cos(R_i, R_j)`` for every pair of classes i < j (eq. 6);
3. ``L = mean over (image, class pair) of |V_s - V_t|^p`` with p = 2 (eq. 7); pairs' losses
   are summed over taps.

A pair counts for an image when both classes are present in both networks' resized masks (at
their own feature sizes). An image with fewer than two such classes adds nothing, and a batch
with none gives a zero that is still connected to the student features (backward works).

Departures: the paper's eq. 6 averages V over class pairs before comparing (1/n sum), which for
2 classes is the same thing; comparing pair by pair keeps multi-class affinities apart. EMKD
keeps lesion-free images in its mean (with a zero region vector), which dilutes the loss by the
share of empty slices; here they are left out. Cosines are invariant to a permutation of either
network's channels. The teacher is treated as a constant; computed in float32.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from pncd.distill.base import DistillBatch, DistillLoss, LossContext, register_loss
from pncd.distill.region import class_masks, region_vectors_from_masks


def region_affinity(vecs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity matrix (B, K, K) of region vectors (B, K, C)."""
    unit = F.normalize(vecs, p=2, dim=-1, eps=eps)
    return torch.bmm(unit, unit.transpose(1, 2))


@register_loss("rd")
class RDLoss(DistillLoss):
    """Mean over images and present class pairs of ``|V_s - V_t|^p``, summed over tap pairs."""

    _pairs: torch.Tensor  # (2, n_pairs) class index pairs i < j (a buffer)

    @classmethod
    def from_context(cls, ctx: LossContext) -> RDLoss:
        return cls(num_classes=ctx.num_classes, p=ctx.options.rd_p)

    def batch_loss(self, batch: DistillBatch) -> torch.Tensor:
        return self(batch.student_feats, batch.teacher_feats, batch.masks)

    def __init__(self, num_classes: int, p: float = 2.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"RD needs at least 2 classes, got {num_classes}")
        if p < 1:
            raise ValueError(f"p must be at least 1 (|x|^p has no usable gradient at 0 below), got {p}")
        self.num_classes = int(num_classes)
        self.p = float(p)
        iu = torch.triu_indices(num_classes, num_classes, offset=1)
        self.register_buffer("_pairs", iu, persistent=False)

    def forward(
        self,
        student_feats: Sequence[torch.Tensor],
        teacher_feats: Sequence[torch.Tensor],
        labels: torch.Tensor,
    ) -> torch.Tensor:
        if len(student_feats) != len(teacher_feats) or not student_feats:
            raise ValueError(
                f"RD needs matching, non-empty tap lists; got {len(student_feats)} student "
                f"and {len(teacher_feats)} teacher features"
            )
        if labels.ndim != 3:
            raise ValueError(f"expected labels (B, H, W), got shape {tuple(labels.shape)}")
        i, j = self._pairs.to(labels.device)
        cache: dict[tuple[int, int], torch.Tensor] = {}

        def masks_at(size: torch.Size) -> torch.Tensor:  # one set of masks per feature size
            key = (int(size[0]), int(size[1]))
            if key not in cache:
                cache[key] = class_masks(labels, key, self.num_classes)
            return cache[key]

        total = None
        with torch.autocast(device_type=labels.device.type, enabled=False):
            for fs, ft in zip(student_feats, teacher_feats):
                if fs.ndim != 4 or ft.ndim != 4 or not fs.shape[0] == ft.shape[0] == labels.shape[0]:
                    raise ValueError(f"tap pair shapes {tuple(fs.shape)} and {tuple(ft.shape)} do not match")
                vs, ps = region_vectors_from_masks(fs, masks_at(fs.shape[-2:]))
                vt, pt = region_vectors_from_masks(ft.detach(), masks_at(ft.shape[-2:]))
                present = ps & pt  # (B, K)
                valid = present[:, i] & present[:, j]  # (B, n_pairs)
                a_s = region_affinity(vs)[:, i, j]
                a_t = region_affinity(vt)[:, i, j]
                diff = (a_s - a_t).abs()
                diff = diff.square() if self.p == 2.0 else diff.pow(self.p)
                loss = torch.where(valid, diff, torch.zeros_like(diff)).sum() / valid.sum().clamp_min(1)
                total = loss if total is None else total + loss
        assert total is not None  # the tap lists are not empty (checked above)
        return total
