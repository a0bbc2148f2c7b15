"""Tests for RDLoss: |V_s - V_t|^p over present class pairs, with V the region cosine affinity."""

from __future__ import annotations

import math

import pytest
import torch

from pncd.distill.rd import RDLoss


def _two_region_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B=1, labels 2x2: class 0 = left column, class 1 = right column (features at the same 2x2).

    Student (C=2): left pixels (1, 0), right pixels (1, 1) -> cos(R_0, R_1) = 1/sqrt(2).
    Teacher (C=3): left pixels (1, 0, 0), right pixels (0, 1, 0) -> cos = 0.
    """
    labels = torch.tensor([[[0, 1], [0, 1]]])
    s = torch.zeros(1, 2, 2, 2)
    s[0, 0] = 1.0  # channel 0 is 1 everywhere
    s[0, 1, :, 1] = 1.0  # channel 1 only on the right column
    t = torch.zeros(1, 3, 2, 2)
    t[0, 0, :, 0] = 1.0
    t[0, 1, :, 1] = 1.0
    return s, t, labels


def test_hand_computed_cosines():
    s, t, labels = _two_region_case()
    assert RDLoss(2)([s], [t], labels).item() == pytest.approx(0.5, rel=1e-5)  # (1/sqrt2 - 0)^2
    assert RDLoss(2, p=1)([s], [t], labels).item() == pytest.approx(1 / math.sqrt(2), rel=1e-5)
    # Summed over two tap pairs.
    assert RDLoss(2)([s, s], [t, t], labels).item() == pytest.approx(1.0, rel=1e-5)


def test_lesion_free_images_add_nothing():
    s, t, labels = _two_region_case()
    empty_labels = torch.zeros_like(labels)
    batch = RDLoss(2)([torch.cat([s, s])], [torch.cat([t, t])], torch.cat([labels, empty_labels]))
    assert batch.item() == pytest.approx(0.5, rel=1e-5)  # mean over the one valid image, not 0.25


def test_batch_without_lesion_gives_connected_zero():
    s = torch.randn(2, 4, 4, 4, requires_grad=True)
    t = torch.randn(2, 6, 4, 4)
    out = RDLoss(2)([s], [t], torch.zeros(2, 8, 8, dtype=torch.long))
    assert out.item() == 0.0
    out.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() == 0


def test_pair_needs_both_classes_in_both_networks():
    # A 1-pixel lesion at (1, 1) of an 8x8 label survives in the student's 8x8 feature but not in the
    # teacher's 4x4 (nearest keeps even pixels only): the pair is skipped, the loss is 0.
    torch.manual_seed(0)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 1, 1] = 1
    assert RDLoss(2)([torch.randn(1, 3, 8, 8)], [torch.randn(1, 3, 4, 4)], labels).item() == 0.0


def test_three_classes_mean_over_pairs_matches_loop():
    torch.manual_seed(1)
    s, t = torch.randn(2, 5, 4, 4), torch.randn(2, 7, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[1] = labels[1].clamp_max(1)  # image 1 has only classes 0 and 1
    expected, n = 0.0, 0
    for b in range(2):
        rs = [s[b][:, labels[b] == k].mean(1) for k in range(3)]
        rt = [t[b][:, labels[b] == k].mean(1) for k in range(3)]
        present = [bool((labels[b] == k).any()) for k in range(3)]
        for i in range(3):
            for j in range(i + 1, 3):
                if present[i] and present[j]:
                    vs = torch.cosine_similarity(rs[i], rs[j], dim=0)
                    vt = torch.cosine_similarity(rt[i], rt[j], dim=0)
                    expected += float((vs - vt) ** 2)
                    n += 1
    assert n == 4
    assert RDLoss(3)([s], [t], labels).item() == pytest.approx(expected / n, rel=1e-4)


def test_invariant_to_channel_permutation():
    torch.manual_seed(2)
    s, t = torch.randn(3, 6, 8, 8), torch.randn(3, 10, 4, 4)
    labels = torch.zeros(3, 16, 16, dtype=torch.long)
    labels[:, 4:12, 2:10] = 1
    base = RDLoss(2)([s], [t], labels)
    perm_s, perm_t = torch.randperm(6), torch.randperm(10)
    torch.testing.assert_close(RDLoss(2)([s[:, perm_s]], [t[:, perm_t]], labels), base)
    assert base.item() > 0


def test_gradient_reaches_student_only_batch_one():
    s = torch.randn(1, 4, 4, 4, requires_grad=True)
    t = torch.randn(1, 4, 4, 4, requires_grad=True)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2] = 1
    RDLoss(2)([s], [t], labels).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype: torch.dtype):
    torch.manual_seed(3)
    s32, t32 = 2e3 * torch.randn(2, 4, 8, 8), 2e3 * torch.randn(2, 4, 8, 8)
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, 2:6, 2:6] = 1
    out = RDLoss(2)([s32.to(dtype)], [t32.to(dtype)], labels)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    ref = RDLoss(2)([s32.to(dtype).float()], [t32.to(dtype).float()], labels)
    torch.testing.assert_close(out, ref)
