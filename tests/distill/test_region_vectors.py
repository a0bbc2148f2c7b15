"""Tests for pncd.distill.region: nearest-resized masks and masked-mean region vectors."""

from __future__ import annotations

import torch

from pncd.distill.region import region_vectors, resize_labels


def test_hand_computed_region_vectors_4x4_labels_on_2x2_feature():
    # Feature (B=1, C=1, 2x2) = [[1, 2], [3, 4]]; labels (1, 4x4). Nearest resize to 2x2 keeps the
    # pixels (0,0), (0,2), (2,0), (2,2). Class 1 there: the right column -> R_1 = (2+4)/2 = 3,
    # R_0 = (1+3)/2 = 2. Class 2 exists only at pixel (1,1), which the resize drops: absent, R_2 = 0.
    feat = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :, 2:] = 1
    labels[0, 1, 1] = 2
    small = resize_labels(labels, (2, 2))
    assert small.tolist() == [[[0, 1], [0, 1]]]
    vecs, present = region_vectors(feat, labels, num_classes=3)
    assert vecs.shape == (1, 3, 1) and vecs.dtype == torch.float32
    torch.testing.assert_close(vecs[0, :, 0], torch.tensor([2.0, 3.0, 0.0]), rtol=1e-5, atol=1e-6)
    assert present.tolist() == [[True, True, False]]


def test_matches_loop_over_pixels():
    torch.manual_seed(0)
    feat = torch.randn(3, 5, 4, 4)
    labels = torch.randint(0, 3, (3, 4, 4))
    vecs, present = region_vectors(feat, labels, 3)
    for b in range(3):
        for k in range(3):
            m = labels[b] == k
            assert bool(present[b, k]) == bool(m.any())
            if m.any():
                expected = feat[b][:, m].mean(dim=1)
                torch.testing.assert_close(vecs[b, k], expected, rtol=1e-4, atol=1e-5)


def test_half_precision_input_gives_float32():
    feat = torch.full((1, 2, 2, 2), 3000.0, dtype=torch.float16)  # sums would overflow fp16 at scale
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    vecs, _ = region_vectors(feat, labels, 2)
    assert vecs.dtype == torch.float32
    torch.testing.assert_close(vecs[0, 0], torch.full((2,), 3000.0), rtol=1e-5, atol=1e-2)
