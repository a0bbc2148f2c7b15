"""Tests for pncd.losses.SegLoss: cross-entropy + batch-wise soft Dice over foreground classes.

(Kept with the distillation-loss tests; SegLoss is the ``Loss_seg`` term of eq. 10.)
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pncd.losses import SegLoss


def _reference(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> tuple[float, float]:
    """CE and 1 - mean foreground soft Dice with an explicit one-hot tensor."""
    c = logits.shape[1]
    p = logits.float().softmax(1)
    onehot = F.one_hot(target, c).permute(0, 3, 1, 2).float()
    inter = (p * onehot).sum((0, 2, 3))
    dice = (2 * inter + smooth) / (p.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + smooth)
    return float(F.cross_entropy(logits.float(), target)), float(1 - dice[1:].mean())


def test_hand_computed_uniform_logits():
    # (B=1, C=2, 1x2) zero logits: p = 1/2 everywhere; target (1, 1x2) = [1, 0].
    # CE = ln 2; class 1: intersection 1/2, sum p = 1, |G| = 1 -> Dice (1 + s)/(2 + s).
    out = SegLoss(2)(torch.zeros(1, 2, 1, 2), torch.tensor([[[1, 0]]]))
    s = 1e-5
    assert out["ce"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert out["dice"].item() == pytest.approx(1 - (1 + s) / (2 + s), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["ce"].item() + out["dice"].item(), rel=1e-6)


def test_near_perfect_prediction_is_near_zero():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:5, 3:6] = 1
    logits = 30 * F.one_hot(target, 2).permute(0, 3, 1, 2).float()
    out = SegLoss(2)(logits, target)
    assert out["loss"].item() < 1e-6


def test_multiclass_matches_one_hot_reference_and_weights():
    torch.manual_seed(0)
    logits, target = torch.randn(3, 4, 8, 8), torch.randint(0, 4, (3, 8, 8))
    ce, dice = _reference(logits, target)
    out = SegLoss(4, ce_weight=0.3, dice_weight=2.0)(logits, target)
    assert out["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out["dice"].item() == pytest.approx(dice, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.3 * ce + 2.0 * dice, rel=1e-5)


def test_batch_wise_dice_with_a_lesion_free_image():
    torch.manual_seed(1)
    logits = torch.randn(2, 2, 8, 8)
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, :4, :4] = 1  # image 1 has no lesion
    out = SegLoss(2)(logits, target)
    assert out["dice"].item() == pytest.approx(_reference(logits, target)[1], rel=1e-5)
    assert all(torch.isfinite(v) for v in out.values())


def test_single_logit_binary_network():
    torch.manual_seed(2)
    z, target = torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 4, 4))
    out = SegLoss(1)(z, target)
    bce = F.binary_cross_entropy_with_logits(z[:, 0], target.float())
    assert out["ce"].item() == pytest.approx(bce.item(), rel=1e-5)


def test_gradients_and_autocast_float32():
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    target = torch.randint(0, 2, (2, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SegLoss(2)(logits.to(torch.bfloat16), target)
    assert out["loss"].dtype == torch.float32
    out["loss"].backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_shape_errors():
    with pytest.raises(ValueError, match="logits"):
        SegLoss(3)(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="target"):
        SegLoss(2)(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))
