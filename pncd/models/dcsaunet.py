"""DCSAU-Net (Xu et al., "DCSAU-Net: A deeper and more compact split-attention U-Net for medical
image segmentation", Computers in Biology and Medicine 2023): the PNCD paper's teacher.

Written from the paper and a reading of the authors' public code (xq141839/DCSAU-Net), whose
layer plan it reproduces so that the parameter count matches (about 2.6 M):

* **PFC stem** (Primary Feature Conservation), full resolution, 64 channels: a 7x7 conv, then
  a 7x7 depthwise conv with a residual connection, then a 1x1 pointwise conv; each conv is
  followed by ReLU then BatchNorm (the official order).
* **CSA block** (Compact Split-Attention): a ResNeSt-style bottleneck of width ``w`` (1x1 conv
  to ``w`` -> split-attention -> 1x1 conv to ``4w``, plus a 1x1-conv shortcut when the
  channels differ). Its split-attention makes two branches with one grouped 3x3 conv
  (``w -> 2w``, 2 groups); the second branch is refined by another grouped 3x3 conv applied
  to the sum of both, and a squeeze-excitation head (global pool -> 1x1 -> BN -> ReLU -> 1x1)
  weights the branches per channel with a softmax over the two (written here as a sigmoid of
  the difference, which is the same function). The first block of most stages follows the
  attention with a 3x3 stride-1 average pool (ResNeSt's "avd" layer, stride 1 in DCSAU-Net).
* **U shape**: four encoder stages of two CSA blocks, each after a 2x2 max-pool (widths 32,
  64, 128, 128 -> 128, 256, 512, 512 channels at strides 2, 4, 8, 16); four decoder stages
  that up-sample by 2 (bilinear, align_corners=True), concatenate the skip feature and apply
  two CSA blocks (widths 64, 32, 16, 16 -> 256, 128, 64, 64 channels); a 1x1 classifier.

Taps: low = ``down1`` (128 channels, stride 2), high = ``down3``, the last stride-8 feature of
the encoder (512 channels).

Note: the attention head normalises a pooled (B, C, 1, 1) tensor with BatchNorm, as the
original does, so training needs batches of at least 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pncd.models import Tap, register_model


class PFC(nn.Module):
    """Primary Feature Conservation: large-kernel stem that keeps full resolution."""

    def __init__(self, in_channels: int, channels: int = 64, kernel_size: int = 7) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, kernel_size, padding=pad), nn.ReLU(), nn.BatchNorm2d(channels))
        self.depthwise = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=pad, groups=channels), nn.ReLU(), nn.BatchNorm2d(channels)
        )
        self.pointwise = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.pointwise(x + self.depthwise(x))


class SplitAttention(nn.Module):
    """Two-branch split-attention at ``width`` channels (the core of a CSA block)."""

    def __init__(self, width: int, reduction: int = 4, min_hidden: int = 32) -> None:
        super().__init__()
        hidden = max(2 * width // reduction, min_hidden)
        self.branches = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.refine = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.squeeze = nn.Sequential(nn.Conv2d(width, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU())
        self.excite = nn.Conv2d(hidden, 2 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.chunk(self.branches(x), 2, dim=1)
        b = self.refine(a + b)
        logits = self.excite(self.squeeze(F.adaptive_avg_pool2d(a + b, 1)))
        la, lb = torch.chunk(logits, 2, dim=1)
        weight_a = torch.sigmoid(la - lb)  # = softmax over the two branches, branch a's share
        return b + weight_a * (a - b)


class CSABlock(nn.Module):
    """Compact Split-Attention bottleneck: ``in_channels`` -> ``4 * width`` channels, same size."""

    def __init__(self, in_channels: int, width: int, blur: bool = False) -> None:
        super().__init__()
        out = 4 * width
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.attention = SplitAttention(width)
        self.blur = nn.AvgPool2d(3, stride=1, padding=1) if blur else nn.Identity()
        self.expand = nn.Sequential(nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out))
        if in_channels == out:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out, 1, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(self.blur(self.attention(self.reduce(x))))
        return F.relu(y + self.shortcut(x))


def csa_stage(in_channels: int, width: int, blur: bool = True) -> nn.Sequential:
    """Two CSA blocks; only the first may carry the 3x3 average pool."""
    return nn.Sequential(CSABlock(in_channels, width, blur=blur), CSABlock(4 * width, width))


class DCSAUNet(nn.Module):
    """DCSAU-Net returning logits at the input size (input sides divisible by 16)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.pfc = PFC(in_channels, 64)
        self.down1 = csa_stage(64, 32, blur=False)  # 128 ch, stride 2
        self.down2 = csa_stage(128, 64)  # 256 ch, stride 4
        self.down3 = csa_stage(256, 128)  # 512 ch, stride 8
        self.down4 = csa_stage(512, 128)  # 512 ch, stride 16
        self.up1 = csa_stage(512 + 512, 64)  # 256 ch, stride 8
        self.up2 = csa_stage(256 + 256, 32)  # 128 ch, stride 4
        self.up3 = csa_stage(128 + 128, 16)  # 64 ch, stride 2
        self.up4 = csa_stage(64 + 64, 16, blur=False)  # 64 ch, stride 1
        self.head = nn.Conv2d(64, num_classes, 1)
        self.taps = {"low": Tap("down1", 128, 2), "high": Tap("down3", 512, 8)}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _merge(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return torch.cat([skip, up], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.pfc(x)
        s2 = self.down1(F.max_pool2d(s1, 2))
        s4 = self.down2(F.max_pool2d(s2, 2))
        s8 = self.down3(F.max_pool2d(s4, 2))
        y = self.down4(F.max_pool2d(s8, 2))
        y = self.up1(self._merge(y, s8))
        y = self.up2(self._merge(y, s4))
        y = self.up3(self._merge(y, s2))
        y = self.up4(self._merge(y, s1))
        return self.head(y)


@register_model("dcsaunet", role="teacher", paper_params_m=2.6)
def dcsaunet(in_channels: int = 1, num_classes: int = 2) -> nn.Module:
    """DCSAU-Net teacher (about 2.6 M parameters in the official implementation)."""
    return DCSAUNet(in_channels, num_classes)
