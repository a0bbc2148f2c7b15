"""Tests for PMDLoss: T^2 * mean over pixels of KL(p_t || p_s)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pncd.distill.pmd import PMDLoss


def _reference(zs: torch.Tensor, zt: torch.Tensor, t: float) -> torch.Tensor:
    b, _, h, w = zs.shape
    kl = F.kl_div(F.log_softmax(zs / t, 1), F.log_softmax(zt / t, 1), log_target=True, reduction="sum")
    return kl / (b * h * w) * t * t


def test_zero_for_identical_logits():
    z = torch.randn(2, 3, 8, 8)
    assert PMDLoss()(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_equals_torch_kl_div(t: float):
    torch.manual_seed(0)
    zs, zt = torch.randn(2, 3, 8, 8), 3 * torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(PMDLoss(t)(zs, zt), _reference(zs, zt, t))


def test_hand_computed_single_pixel():
    # One pixel, 2 classes, T = 1: p_t = (1/2, 1/2) (logits 0, 0); p_s = softmax(0, ln 3) = (1/4, 3/4).
    # KL = 1/2 ln(2) + 1/2 ln(2/3).
    zs = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)
    zt = torch.zeros(1, 2, 1, 1)
    expected = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert PMDLoss(1.0)(zs, zt).item() == pytest.approx(expected, rel=1e-6)


def test_single_logit_is_read_as_zero_and_z():
    torch.manual_seed(1)
    zs, zt = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    two = _reference(torch.cat([torch.zeros_like(zs), zs], 1), torch.cat([torch.zeros_like(zt), zt], 1), 4.0)
    torch.testing.assert_close(PMDLoss()(zs, zt), two)


def test_teacher_resized_bilinearly_to_student():
    torch.manual_seed(2)
    zs, zt = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 16, 16)
    zt8 = F.interpolate(zt, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(PMDLoss()(zs, zt), _reference(zs, zt8, 4.0))


def test_gradient_reaches_student_only():
    zs = torch.randn(1, 2, 4, 4, requires_grad=True)
    zt = torch.randn(1, 2, 4, 4, requires_grad=True)
    PMDLoss()(zs, zt).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_large_logits_stay_finite(dtype: torch.dtype):
    torch.manual_seed(3)
    zs32, zt32 = 3e4 * torch.randn(2, 2, 4, 4).clamp(-2, 2), 3e4 * torch.randn(2, 2, 4, 4).clamp(-2, 2)
    zs, zt = zs32.to(dtype), zt32.to(dtype)
    out = PMDLoss()(zs, zt)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    torch.testing.assert_close(out, _reference(zs.float(), zt.float(), 4.0))


def test_class_mismatch_raises():
    with pytest.raises(ValueError, match="classes"):
        PMDLoss()(torch.randn(1, 2, 4, 4), torch.randn(1, 3, 4, 4))
