"""Prediction Maps Distillation (PMD, PNCD eq. 9).

    L_PMD = T^2 * (1 / (B*H*W)) * sum over pixels of KL(p_t || p_s),   p = softmax(z / T)

Departures from the paper:

- direction: the paper prints KL(p_s || p_t); the usual distillation direction, with the teacher
  as the target distribution, is used (as in Hinton et al. and EMKD);
- temperature T = 4 and the T^2 factor (EMKD's choice; the paper does not give T);
- a single-logit binary network is read as the two-class logits [0, z];
- when the two maps differ in size, the teacher's logits are resized bilinearly to the student's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pncd.distill.base import DistillBatch, DistillLoss, LossContext, register_loss
from pncd.losses import binary_as_two_class


@register_loss("pmd", uses_features=False)
class PMDLoss(DistillLoss):
    """Pixel-wise KL divergence between teacher and student class probabilities at temperature T."""

    @classmethod
    def from_context(cls, ctx: LossContext) -> PMDLoss:
        return cls(temperature=ctx.options.temperature)

    def batch_loss(self, batch: DistillBatch) -> torch.Tensor:
        return self(batch.student_logits, batch.teacher_logits)

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        if student_logits.ndim != 4 or teacher_logits.ndim != 4:
            raise ValueError(
                f"expected logits (B, C, H, W), got {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
            )
        t = self.temperature
        with torch.autocast(device_type=student_logits.device.type, enabled=False):
            zs = student_logits.float()
            zt = teacher_logits.detach().float()
            if zs.shape[1] == 1:
                zs = binary_as_two_class(zs)
            if zt.shape[1] == 1:
                zt = binary_as_two_class(zt)
            if zs.shape[1] != zt.shape[1]:
                raise ValueError(f"student has {zs.shape[1]} classes, teacher {zt.shape[1]}")
            if zs.shape[-2:] != zt.shape[-2:]:
                zt = F.interpolate(zt, size=zs.shape[-2:], mode="bilinear", align_corners=False)
            log_ps = F.log_softmax(zs / t, dim=1)
            log_pt = F.log_softmax(zt / t, dim=1)
            kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)  # (B, H, W)
            return kl.mean() * (t * t)
