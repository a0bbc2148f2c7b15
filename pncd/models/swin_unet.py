"""Swin-UNet (Cao, Wang, Chen, Jiang, Zhang, Tian, Wang, "Swin-Unet: Unet-like Pure Transformer
for Medical Image Segmentation", ECCV Workshops 2022 / arXiv 2021). One of the teachers the
PNCD paper compares against (its Table 2, no parameter count given).

The Swin-T configuration of the paper: patch size 4, embedding 96, encoder stages of 2 Swin
blocks at 96, 192, 384, 768 channels (3, 6, 12, 24 heads; the last is the bottleneck), patch
merging between them; a symmetric decoder with *patch expanding* (a linear layer doubling the
channels, rearranged to twice the resolution at half the channels, LayerNorm), skip
connections (concatenation + a linear layer back to the width) and 2 Swin blocks per level;
a final x4 patch expanding and a 1x1 classifier. Stochastic depth up to 0.1.

Built from torchvision's Swin Transformer (``SwinTransformerBlock``, ``PatchMerging``), with
two pieces of our own: the patch expanding layers (written here as a linear layer plus
pixel-shuffle, which is the same rearrangement up to a fixed permutation of the linear
layer's outputs) and the window attention (``FixedShiftWindowAttention``, a subclass of
torchvision's that keeps its parameters and relative position bias). torchvision's attention
turns the shift off whenever a window covers the whole feature map, a decision taken in Python
from the input size: a graph traced at one size then computes something else at another.
Ours shifts every second block at every size, so one exported graph serves every valid size;
where a stage is a single window (e.g. 64 x 64 inputs) the shifted block attends within the
four shift regions, as Swin's masking defines them.

**Input size.** Windows must tile every stage exactly (no padding). Window sizes per encoder
stage are ``window_sizes`` (default 8, 8, 4, 2; the decoder reuses them level by level): the
official Swin rule of shrinking a window that is larger than its feature map, applied at the
smallest supported input, 64 x 64 (stages 16, 8, 4 and 2 tokens wide). Input sides must then be
multiples of 64 (64, 128, 192, 256, ...; ``size_multiple``); ``forward`` raises a PncdError
naming the valid sizes otherwise. For 256 / 512 inputs, ``window_sizes=(8, 8, 8, 8)`` gives
the paper's uniform windows (sides then multiples of 256). Cao et al. use window 7 at 224.

27.15 M parameters at 1 input channel and 2 classes.

Taps: Swin-UNet has no stride-2 feature (its first layer cuts 4 x 4 patches), so low =
``encoder.0``, the first stage's output (96 channels, stride 4); high = ``encoder.1``, the
last stride-8 feature of the encoder (192 channels). Both are channels-first (B, C, H, W).
"""

from __future__ import annotations

import math

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.swin_transformer import PatchMerging, ShiftedWindowAttention, SwinTransformerBlock

from pncd.errors import PncdError
from pncd.models import Tap, check_input_size, register_model

PATCH = 4


def shift_region_mask(height: int | torch.Tensor, width: int | torch.Tensor, window: int, shift: int,
                      like: torch.Tensor) -> torch.Tensor:
    """Additive mask ``(windows, N, N)`` for shifted windows: 0 inside a region, -100 across.

    After the cyclic shift, the last ``window`` rows (columns) of the map mix tokens from two
    sides; rows are labelled 0 (before the last window), 1 (last window, before the shift) and
    2 (the wrapped-around ``shift`` rows), the same for columns, and tokens attend only to
    tokens with the same label pair. Tensor ops only, so a traced graph keeps the size symbolic.
    """
    # an int in eager mode, a 0-d tensor under the tracing exporter: torch's ops take both
    height, width = cast(int, height), cast(int, width)
    rows = torch.arange(height, device=like.device)
    cols = torch.arange(width, device=like.device)
    row_label = (rows >= height - window).long() + (rows >= height - shift).long()
    col_label = (cols >= width - window).long() + (cols >= width - shift).long()
    label = row_label.unsqueeze(1) * 3 + col_label.unsqueeze(0)  # (H, W)
    label = label.reshape(height // window, window, width // window, window).transpose(1, 2)
    label = label.reshape(-1, window * window)  # (windows, N)
    different = label.unsqueeze(2) != label.unsqueeze(1)
    return different.to(like.dtype) * -100.0


class FixedShiftWindowAttention(ShiftedWindowAttention):
    """torchvision's window attention, shifting whenever ``shift_size`` says so, at any size.

    Input (B, H, W, C) with H and W multiples of the window (checked by the network).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window, shift = self.window_size[0], self.shift_size[0]
        batch, height, width, channels = x.shape
        heads, tokens = self.num_heads, window * window
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        rows, cols = height // window, width // window
        t = x.reshape(batch, rows, window, cols, window, channels).transpose(2, 3).reshape(-1, tokens, channels)
        qkv = self.qkv(t).reshape(t.shape[0], tokens, 3, heads, channels // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q * (channels // heads) ** -0.5) @ k.transpose(-2, -1) + self.get_relative_position_bias()
        if shift:
            mask = shift_region_mask(height, width, window, shift, scores)  # (windows, N, N)
            scores = scores.reshape(batch, -1, heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)
            scores = scores.reshape(-1, heads, tokens, tokens)
        probs = F.dropout(scores.softmax(dim=-1), p=self.attention_dropout, training=self.training)
        out = (probs @ v).transpose(1, 2).reshape(-1, tokens, channels)
        out = F.dropout(self.proj(out), p=self.dropout, training=self.training)
        out = out.reshape(batch, rows, cols, window, window, channels).transpose(2, 3).reshape(batch, height, width, channels)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out


def swin_blocks(dim: int, heads: int, window: int, drop: list[float]) -> nn.Sequential:
    """Swin blocks alternating regular and shifted windows (shift = window // 2)."""
    return nn.Sequential(*[
        SwinTransformerBlock(dim, heads, [window, window], [0, 0] if i % 2 == 0 else [window // 2, window // 2],
                             stochastic_depth_prob=p, attn_layer=FixedShiftWindowAttention)
        for i, p in enumerate(drop)
    ])


class PatchExpand(nn.Module):
    """Patch expanding (channels-last): linear to ``scale**2 * out`` channels, pixel-shuffle, LayerNorm."""

    def __init__(self, dim: int, out: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(dim, scale * scale * out, bias=False)
        self.norm = nn.LayerNorm(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(self.expand(x).permute(0, 3, 1, 2), self.scale)
        return self.norm(x.permute(0, 2, 3, 1))


class EncoderStage(nn.Module):
    """Optional patch merging, then Swin blocks; channels-first in and out (tappable)."""

    def __init__(self, dim: int, heads: int, window: int, drop: list[float], merge: bool) -> None:
        super().__init__()
        self.merge = PatchMerging(dim // 2) if merge else nn.Identity()
        self.blocks = swin_blocks(dim, heads, window, drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.merge(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class DecoderStage(nn.Module):
    """Concatenate the skip, linear back to ``dim``, Swin blocks, then patch expanding."""

    def __init__(self, dim: int, heads: int, window: int, drop: list[float], expand: nn.Module) -> None:
        super().__init__()
        self.fuse = nn.Linear(2 * dim, dim)
        self.blocks = swin_blocks(dim, heads, window, drop)
        self.expand = expand

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.expand(self.blocks(self.fuse(torch.cat([x, skip], dim=-1))))


class SwinUNet(nn.Module):
    """Swin-UNet (Swin-T widths) returning logits at the input size (sides multiples of ``size_multiple``)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, window_sizes: tuple[int, ...] = (8, 8, 4, 2),
                 embed_dim: int = 96, drop_path: float = 0.1) -> None:
        super().__init__()
        window_sizes = tuple(int(w) for w in window_sizes)
        if len(window_sizes) != 4 or min(window_sizes) < 1:
            raise PncdError(f"swin_unet window_sizes must be 4 positive sizes (one per stage), got {window_sizes}")
        if embed_dim % 32:
            raise PncdError(f"swin_unet embed_dim must be a multiple of 32 (heads of 32 channels), got {embed_dim}")
        self.window_sizes = window_sizes
        self.size_multiple = math.lcm(*(PATCH * 2**i * w for i, w in enumerate(window_sizes)))
        dims = [embed_dim * 2**i for i in range(4)]
        heads = [d // 32 for d in dims]  # Swin-T: 3, 6, 12, 24
        drop = [drop_path * i / 7 for i in range(8)]  # linear over the 8 encoder blocks
        self.embed = nn.Conv2d(in_channels, embed_dim, PATCH, stride=PATCH)
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.encoder = nn.ModuleList(
            EncoderStage(dims[i], heads[i], window_sizes[i], drop[2 * i: 2 * i + 2], merge=i > 0) for i in range(4)
        )
        self.norm = nn.LayerNorm(dims[3])
        self.expand = PatchExpand(dims[3], dims[2], 2)
        self.decoder = nn.ModuleList(
            DecoderStage(dims[i], heads[i], window_sizes[i], drop[2 * i: 2 * i + 2],
                         PatchExpand(dims[i], dims[i - 1], 2) if i else nn.LayerNorm(dims[0]))
            for i in (2, 1, 0)
        )
        self.final_expand = PatchExpand(dims[0], dims[0], PATCH)
        self.head = nn.Conv2d(dims[0], num_classes, 1, bias=False)
        self.taps = {"low": Tap("encoder.0", dims[0], 4), "high": Tap("encoder.1", dims[1], 8)}
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.size_multiple, "swin_unet")
        y = self.embed_norm(self.embed(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        skips = []
        for stage in self.encoder:
            y = stage(y)
            skips.append(y.permute(0, 2, 3, 1))
        y = self.expand(self.norm(skips.pop()))
        for stage in self.decoder:
            y = stage(y, skips.pop())
        return self.head(self.final_expand(y).permute(0, 3, 1, 2))


def _init_weights(m: nn.Module) -> None:
    """Swin's initialisation: truncated normal (std 0.02) linear weights, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


@register_model("swin_unet", role="teacher")
def swin_unet(in_channels: int = 1, num_classes: int = 2, window_sizes: tuple[int, ...] = (8, 8, 4, 2)) -> nn.Module:
    """Swin-UNet teacher (Swin-T widths, 27.15 M parameters; input sides multiples of 64)."""
    return SwinUNet(in_channels, num_classes, tuple(window_sizes))
