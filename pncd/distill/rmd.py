"""Region Matching Distillation (RMD, PNCD eqs. 1-4): match normalised importance maps.

For each tap pair (student feature e_s, teacher feature e_t):

1. bring e_s to e_t's spatial size (eq. 1): bilinear up-sampling when it is smaller, adaptive
   average pooling when it is larger (a map smaller in one dimension and larger in the other is
   resized bilinearly);
2. importance map ``M = sum_c |e_c|^2`` (eq. 2), shape (B, h, w), so the two networks may have
   different channel counts;
3. flatten and divide by its L2 norm per sample (eq. 4);
4. ``L = mean over batch of ||M_s - M_t||_1``; the pairs' losses are summed (eq. 4's sum over P).

``variant="emkd"`` follows EMKD's importance-map distillation instead (attention transfer with
exponent 4): ``M = mean_c e_c^4`` (= |e|^4; mean vs sum over channels is removed by the
normalisation), L2-normalised per sample, and ``L = mean over batch of sum over positions of
(M_s - M_t)^2`` (squared L2 distance, summed over positions, averaged over the batch).

The loss is invariant to scaling either feature map by a positive constant. The teacher map is
treated as a constant (detached). Computed in float32 whatever the input dtype.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from pncd.distill.base import DistillBatch, DistillLoss, LossContext, register_loss

_VARIANTS = ("paper", "emkd")


def match_size(student: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a student feature to the teacher's (h, w): bilinear up, adaptive average pool down."""
    h, w = student.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return student
    if h >= th and w >= tw:
        return F.adaptive_avg_pool2d(student, (th, tw))
    return F.interpolate(student, size=(th, tw), mode="bilinear", align_corners=False)


@register_loss("rmd")
class RMDLoss(DistillLoss):
    """Sum over tap pairs of the distance between L2-normalised importance maps."""

    @classmethod
    def from_context(cls, ctx: LossContext) -> RMDLoss:
        return cls(variant=ctx.options.rmd_variant)

    def batch_loss(self, batch: DistillBatch) -> torch.Tensor:
        return self(batch.student_feats, batch.teacher_feats)

    def __init__(self, variant: str = "paper", eps: float = 1e-12) -> None:
        super().__init__()
        if variant not in _VARIANTS:
            raise ValueError(f"unknown RMD variant {variant!r}; valid: {', '.join(_VARIANTS)}")
        self.variant = variant
        self.eps = float(eps)

    def importance(self, feat: torch.Tensor) -> torch.Tensor:
        """Flattened, per-sample L2-normalised importance map (B, h*w) of a float32 feature."""
        sq = feat.square()
        m = sq.sum(dim=1) if self.variant == "paper" else sq.square().mean(dim=1)
        return F.normalize(m.flatten(1), p=2, dim=1, eps=self.eps)

    def forward(
        self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        if len(student_feats) != len(teacher_feats) or not student_feats:
            raise ValueError(
                f"RMD needs matching, non-empty tap lists; got {len(student_feats)} student "
                f"and {len(teacher_feats)} teacher features"
            )
        total = None
        with torch.autocast(device_type=student_feats[0].device.type, enabled=False):
            for fs, ft in zip(student_feats, teacher_feats):
                if fs.ndim != 4 or ft.ndim != 4 or fs.shape[0] != ft.shape[0]:
                    raise ValueError(f"tap pair shapes {tuple(fs.shape)} and {tuple(ft.shape)} do not match")
                fs = match_size(fs.float(), ft.shape[-2:])
                ms = self.importance(fs)
                mt = self.importance(ft.detach().float())
                diff = ms - mt
                per_sample = diff.abs().sum(dim=1) if self.variant == "paper" else diff.square().sum(dim=1)
                loss = per_sample.mean()
                total = loss if total is None else total + loss
        assert total is not None  # the tap lists are not empty (checked above)
        return total
