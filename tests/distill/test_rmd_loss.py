"""Tests for RMDLoss: L1 distance of L2-normalised importance maps, summed over tap pairs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pncd.distill.rmd import RMDLoss


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_hand_computed_2x2_maps_with_different_channel_counts():
    # Student (B=1, C=1, 2x2) = [[2, 0], [0, 1]] -> M_s = (4, 0, 0, 1) / sqrt(17).
    # Teacher (B=1, C=2, 2x2): [[1, 0], [0, 0]] and [[0, 2], [0, 0]] -> M_t = (1, 4, 0, 0) / sqrt(17).
    # ||M_s - M_t||_1 = (3 + 4 + 0 + 1) / sqrt(17) = 8 / sqrt(17).
    s = _t([[2, 0], [0, 1]]).view(1, 1, 2, 2)
    t = torch.stack([_t([[1, 0], [0, 0]]), _t([[0, 2], [0, 0]])]).view(1, 2, 2, 2)
    assert RMDLoss()([s], [t]).item() == pytest.approx(8 / math.sqrt(17), rel=1e-6)


def test_batch_mean_and_sum_over_taps():
    s1 = _t([[2, 0], [0, 1]]).view(1, 1, 2, 2)
    t1 = torch.stack([_t([[1, 0], [0, 0]]), _t([[0, 2], [0, 0]])]).view(1, 2, 2, 2)
    same = torch.ones(1, 1, 2, 2)
    loss = RMDLoss()
    # A batch of (s1, t1) and an identical pair (loss 0) averages to half.
    batch = loss([torch.cat([s1, same])], [torch.cat([t1, same.expand(1, 2, 2, 2)])])
    assert batch.item() == pytest.approx(4 / math.sqrt(17), rel=1e-6)
    # Two tap pairs add up.
    assert loss([s1, s1], [t1, t1]).item() == pytest.approx(16 / math.sqrt(17), rel=1e-6)


def test_student_smaller_is_upsampled_bilinearly_and_larger_is_pooled():
    torch.manual_seed(0)
    t = torch.randn(2, 3, 4, 4)
    small = torch.randn(2, 5, 2, 2)
    up = F.interpolate(small, size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(RMDLoss()([small], [t]), RMDLoss()([up], [t]))
    # Larger: a 4x4 map made of constant 2x2 blocks pools exactly to its block values.
    blocks = _t([[1, 3], [0, 2]]).view(1, 1, 2, 2)
    big = blocks.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    teacher = _t([[1, 0], [0, 0]]).view(1, 1, 2, 2)
    # M_s = (1, 9, 0, 4) / sqrt(98); M_t = (1, 0, 0, 0).
    n = math.sqrt(98)
    expected = abs(1 / n - 1) + 9 / n + 4 / n
    assert RMDLoss()([big], [teacher]).item() == pytest.approx(expected, rel=1e-6)


def test_invariant_to_positive_scaling():
    torch.manual_seed(1)
    s, t = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 8, 8)
    base = RMDLoss()([s], [t])
    torch.testing.assert_close(RMDLoss()([3.7 * s], [0.2 * t]), base)
    torch.testing.assert_close(RMDLoss("emkd")([3.7 * s], [0.2 * t]), RMDLoss("emkd")([s], [t]))


def test_emkd_variant_hand_computed():
    # Single channel: M = e^4. Student [[1, 0], [0, 1]] -> (1, 0, 0, 1)/sqrt(2); teacher [[1, 0], [0, 0]]
    # -> (1, 0, 0, 0). Squared L2 = (1/sqrt(2) - 1)^2 + (1/sqrt(2))^2 = 2 - sqrt(2).
    s = _t([[1, 0], [0, 1]]).view(1, 1, 2, 2)
    t = _t([[1, 0], [0, 0]]).view(1, 1, 2, 2)
    assert RMDLoss("emkd")([s], [t]).item() == pytest.approx(2 - math.sqrt(2), rel=1e-6)
    # |e|^4: the sign of the feature does not matter.
    assert RMDLoss("emkd")([-s], [t]).item() == pytest.approx(2 - math.sqrt(2), rel=1e-6)


def test_gradient_reaches_student_only_and_batch_size_one():
    s = torch.randn(1, 4, 4, 4, requires_grad=True)
    t = torch.randn(1, 8, 2, 2, requires_grad=True)
    RMDLoss()([s], [t]).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_does_not_overflow(dtype: torch.dtype):
    # Squares of 1000 (1e6) overflow float16 (max 65504): the loss must square in float32.
    torch.manual_seed(2)
    s32, t32 = 1000 * torch.rand(2, 4, 4, 4) + 1, 1000 * torch.rand(2, 4, 4, 4) + 1
    out = RMDLoss()([s32.to(dtype)], [t32.to(dtype)])
    assert out.dtype == torch.float32 and torch.isfinite(out)
    ref = RMDLoss()([s32.to(dtype).float()], [t32.to(dtype).float()])
    torch.testing.assert_close(out, ref)


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        RMDLoss("nope")
    with pytest.raises(ValueError, match="tap"):
        RMDLoss()([torch.randn(1, 1, 2, 2)], [])
