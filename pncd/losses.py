"""The segmentation loss: cross-entropy + soft Dice (the PNCD paper's ``Loss_seg``, eq. 10).

Soft Dice is computed batch-wise (sums over the whole batch and all pixels, not per image), over
the foreground classes 1..K-1 of the softmax probabilities, with smoothing 1e-5:

    dice_c = (2 * sum(p_c * g_c) + s) / (sum(p_c) + sum(g_c) + s),   L_dice = 1 - mean_c dice_c

Batch-wise sums keep the Dice term defined (and its gradient useful) on batches where some
images have no lesion, which is most slices of a brain MRI volume.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def binary_as_two_class(logits: torch.Tensor) -> torch.Tensor:
    """Read a single-logit map ``z`` (B, 1, H, W) as the two-class logits ``[0, z]``."""
    return torch.cat([torch.zeros_like(logits), logits], dim=1)


class SegLoss(nn.Module):
    """``ce_weight * CE + dice_weight * (1 - soft Dice)``; forward returns {"loss", "ce", "dice"}.

    ``num_classes = 1`` means a single-logit binary network (read as logits ``[0, z]``; the
    target holds 0/1). Everything is computed in float32, also under autocast.
    """

    def __init__(
        self, num_classes: int, ce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1e-5
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if logits.ndim != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(f"expected logits (B, {self.num_classes}, H, W), got {tuple(logits.shape)}")
        if target.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
        with torch.autocast(device_type=logits.device.type, enabled=False):
            z = logits.float()
            if self.num_classes == 1:
                z = binary_as_two_class(z)
            c = z.shape[1]
            target = target.long()
            ce = F.cross_entropy(z, target)
            probs = torch.softmax(z, dim=1)
            # Per-class sums without a one-hot tensor: the probability at the target class,
            # summed per class with scatter_add; |G_c| the same way (no host synchronisation).
            flat_t = target.reshape(-1)
            p_at_t = probs.gather(1, target.unsqueeze(1)).reshape(-1)
            inter = probs.new_zeros(c).scatter_add(0, flat_t, p_at_t)
            gt_sum = probs.new_zeros(c).scatter_add(0, flat_t, torch.ones_like(p_at_t))
            pred_sum = probs.sum(dim=(0, 2, 3))
            dice_c = (2.0 * inter + self.smooth) / (pred_sum + gt_sum + self.smooth)
            dice_loss = 1.0 - dice_c[1:].mean()
            total = self.ce_weight * ce + self.dice_weight * dice_loss
        return {"loss": total, "ce": ce, "dice": dice_loss}
