"""DCSAU-Net specifics: the split-attention weighting is the official two-way softmax."""

from __future__ import annotations

import torch

from pncd.models.dcsaunet import CSABlock, SplitAttention


def test_split_attention_is_a_softmax_over_the_two_branches() -> None:
    """Recompute the block by hand: softmax over the radix axis of (B, 2, C) attention logits."""
    torch.manual_seed(0)
    att = SplitAttention(8).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        a, b = torch.chunk(att.branches(x), 2, dim=1)
        b = att.refine(a + b)
        logits = att.excite(att.squeeze((a + b).mean(dim=(2, 3), keepdim=True)))
        w = torch.softmax(logits.view(2, 2, 8, 1, 1), dim=1)  # (B, radix, C, 1, 1)
        expected = w[:, 0] * a + w[:, 1] * b
        got = att(x)
    assert torch.allclose(got, expected, atol=1e-6)


def test_csa_block_shortcut_only_when_channels_change() -> None:
    same = CSABlock(512, 128)  # 512 -> 4 * 128: identity shortcut, as in the official down4
    other = CSABlock(64, 32)  # 64 -> 128: 1x1 conv + BN shortcut
    assert isinstance(same.shortcut, torch.nn.Identity)
    assert isinstance(other.shortcut[0], torch.nn.Conv2d) and other.shortcut[0].out_channels == 128
    x = torch.randn(2, 64, 8, 8)
    assert other(x).shape == (2, 128, 8, 8)
