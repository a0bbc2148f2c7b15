"""FANet (Tomar, Jha, Riegler, Johansen, Johansen, Rittscher, Halvorsen, Ali, "FANet: A Feedback
Attention Network for Improved Biomedical Image Segmentation", IEEE TNNLS 2022), 2-D. One of
the teachers the PNCD paper compares against (its Table 2, no parameter count given).

* **Residual block**: 3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, plus a shortcut (1x1 conv ->
  BN -> squeeze-and-excitation), summed and passed through ReLU.
* **MixPool** (merges features with the feedback mask): a 3x3 conv -> BN -> ReLU -> 1x1 conv
  -> sigmoid predicts a mask from the features, which is OR-ed with the input mask (max-pooled
  to the block's resolution); one 3x3 conv branch (c/2) sees the features times that mask,
  another (c/2) the plain features; the two are concatenated.
* **U shape**: four encoder blocks (two residual blocks + MixPool + 2x2 max-pool; 32, 64, 128,
  256 channels), four decoder blocks (4x4 stride-2 transposed conv, concatenation with the
  skip, two residual blocks + MixPool; 128, 64, 32, 16 channels), and a 1x1 classifier on the
  last decoder feature concatenated with the mask.

Feedback, as built here: FANet feeds the mask predicted for an image in the previous *epoch*
back as an input (kept per image by the training script), and at test time re-runs the
network with its own last prediction for a fixed number of rounds (10 in the authors' code),
starting from an empty mask. A self-contained network cannot keep per-image state across
epochs, so the feedback is unrolled inside ``forward``: ``iterations`` passes (default 2), the
first with an empty mask, each later one with the previous pass's foreground probability
(1 - the background probability). The loop length is a constructor constant, so ``forward``
has no data-dependent control flow and exports to ONNX unrolled; gradients flow through every
pass, so the first pass learns to give a useful mask.

Masks stay soft: the paper binarises both masks at 0.5 before the logical OR; here the OR is
the maximum of the two probabilities. The authors' hard thresholds carry no gradient (the mask
predictor of every MixPool never learns), and a threshold inside the network makes outputs
jump where a probability sits near 0.5, so FP16 / INT8 or another runtime could flip pixels;
the maximum of probabilities equals the OR on 0/1 masks and is continuous. The
squeeze-and-excitation bottleneck uses ratio 16 (at least 4 units); the authors' code uses one
hidden unit.

7.75 M parameters at 1 input channel and 2 classes. Input sides must be divisible by 16.

Taps: low = ``e1.pool`` (32 channels, stride 2); high = ``e3.pool``, the last stride-8 feature
of the encoder (128 channels). With several passes the taps hold the last pass's features.
"""

from __future__ import annotations

import torch
from torch import nn

from pncd.errors import PncdError
from pncd.models import Tap, register_model


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, ratio: int = 16) -> None:
        super().__init__()
        hidden = max(channels // ratio, 4)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3), keepdim=True))


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), SqueezeExcitation(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class MixPool(nn.Module):
    """Merge features with the feedback mask (given at the input resolution; ``stride`` down)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.predict = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 1), nn.Sigmoid(),
        )
        self.down = nn.MaxPool2d(stride) if stride > 1 else nn.Identity()
        half = channels // 2
        self.masked = nn.Sequential(nn.Conv2d(channels, half, 3, padding=1), nn.BatchNorm2d(half), nn.ReLU(inplace=True))
        rest = channels - half
        self.plain = nn.Sequential(nn.Conv2d(channels, rest, 3, padding=1), nn.BatchNorm2d(rest), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        gate = torch.maximum(self.predict(x), self.down(mask))  # soft logical OR
        return torch.cat([self.masked(x * gate), self.plain(x)], dim=1)


class EncoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.res = nn.Sequential(ResidualBlock(cin, cout), ResidualBlock(cout, cout))
        self.mix = MixPool(cout, stride)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.res(x)
        return self.pool(self.mix(skip, mask)), skip


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin, 4, stride=2, padding=1)
        self.res = nn.Sequential(ResidualBlock(2 * cin, cout), ResidualBlock(cout, cout))
        self.mix = MixPool(cout, stride)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.mix(self.res(torch.cat([self.up(x), skip], dim=1)), mask)


class FANet(nn.Module):
    """FANet with ``iterations`` unrolled feedback passes (input sides divisible by 16)."""

    size_multiple = 16

    def __init__(self, in_channels: int = 1, num_classes: int = 2, iterations: int = 2) -> None:
        super().__init__()
        if iterations < 1:
            raise PncdError(f"fanet iterations must be >= 1, got {iterations}")
        if num_classes < 2:
            raise PncdError(f"fanet needs num_classes >= 2 (background + foreground), got {num_classes}")
        self.iterations = iterations
        self.e1 = EncoderBlock(in_channels, 32, 1)
        self.e2 = EncoderBlock(32, 64, 2)
        self.e3 = EncoderBlock(64, 128, 4)
        self.e4 = EncoderBlock(128, 256, 8)
        self.d1 = DecoderBlock(256, 128, 8)
        self.d2 = DecoderBlock(128, 64, 4)
        self.d3 = DecoderBlock(64, 32, 2)
        self.d4 = DecoderBlock(32, 16, 1)
        self.head = nn.Conv2d(16 + 1, num_classes, 1)
        self.taps = {"low": Tap("e1.pool", 32, 2), "high": Tap("e3.pool", 128, 8)}

    def single_pass(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One FANet pass given the feedback mask ``(B, 1, H, W)`` in [0, 1]."""
        p1, s1 = self.e1(x, mask)
        p2, s2 = self.e2(p1, mask)
        p3, s3 = self.e3(p2, mask)
        p4, s4 = self.e4(p3, mask)
        d = self.d1(p4, s4, mask)
        d = self.d2(d, s3, mask)
        d = self.d3(d, s2, mask)
        d = self.d4(d, s1, mask)
        return self.head(torch.cat([d, mask], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(x[:, :1])
        logits = self.single_pass(x, mask)
        for _ in range(self.iterations - 1):
            foreground = 1.0 - torch.softmax(logits, dim=1)[:, :1]
            logits = self.single_pass(x, foreground)
        return logits


@register_model("fanet", role="teacher")
def fanet(in_channels: int = 1, num_classes: int = 2, iterations: int = 2) -> nn.Module:
    """FANet teacher, feedback unrolled over ``iterations`` passes (7.75 M parameters)."""
    return FANet(in_channels, num_classes, iterations)
