"""A distillation loss pncd does not ship: one file, one registry line (tests/distill/test_loss_registry.py)."""

from __future__ import annotations

import torch

from pncd.distill.base import DistillBatch, DistillLoss, register_loss


@register_loss("toy", uses_features=False)
class ToyLoss(DistillLoss):
    """Mean squared difference between the student's and the teacher's class probabilities."""

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return (batch.student_logits.softmax(1) - batch.teacher_logits.softmax(1)).square().mean()
