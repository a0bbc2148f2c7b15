"""U-Net (Ronneberger et al., MICCAI 2015) with BatchNorm and same-padding convs: a reference
teacher that any reader recognises.

Four 2x2 max-pool steps; every level applies two (3x3 conv -> BN -> ReLU); the decoder
up-samples with 2x2 transposed convs that halve the channels, concatenates the skip feature
and applies two convs again; a 1x1 classifier. Same padding (the paper crops) keeps the
output at the input size.

``base`` is the first level's width: the paper's 64 gives about 31 M parameters; the default
here is 32 (about 7.8 M), four times cheaper to train on a CPU. Since the width is a choice,
the registry pins no reference parameter count. Pass ``base=64`` for the classic network
(``pncd.models.create("unet", base=64)``; it is recorded in the run's config).

Taps: low = ``down1`` (2 * base channels, stride 2), high = ``down3``, the last stride-8
feature of the encoder (8 * base channels).
"""

from __future__ import annotations

import torch
from torch import nn

from pncd.errors import PncdError
from pncd.models import Tap, register_model


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Up(nn.Module):
    """2x2 transposed conv (channels halved), concatenation with the skip, two convs."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
        self.conv = double_conv(cin // 2 + cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """U-Net returning logits at the input size (input sides divisible by 16)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base: int = 32) -> None:
        super().__init__()
        w = [base * 2**i for i in range(5)]
        self.inc = double_conv(in_channels, w[0])
        self.down1 = nn.Sequential(nn.MaxPool2d(2), double_conv(w[0], w[1]))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), double_conv(w[1], w[2]))
        self.down3 = nn.Sequential(nn.MaxPool2d(2), double_conv(w[2], w[3]))
        self.down4 = nn.Sequential(nn.MaxPool2d(2), double_conv(w[3], w[4]))
        self.up1 = Up(w[4], w[3])
        self.up2 = Up(w[3], w[2])
        self.up3 = Up(w[2], w[1])
        self.up4 = Up(w[1], w[0])
        self.head = nn.Conv2d(w[0], num_classes, 1)
        self.taps = {"low": Tap("down1", w[1], 2), "high": Tap("down3", w[3], 8)}
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.inc(x)
        s2 = self.down1(s1)
        s4 = self.down2(s2)
        s8 = self.down3(s4)
        y = self.down4(s8)
        y = self.up1(y, s8)
        y = self.up2(y, s4)
        y = self.up3(y, s2)
        return self.head(self.up4(y, s1))


@register_model("unet", role="teacher", paper_params_m=None)
def unet(in_channels: int = 1, num_classes: int = 2, base: int = 32) -> nn.Module:
    """Classic U-Net teacher with BatchNorm; ``base=64`` is the paper's width (about 31 M)."""
    if base < 2 or base % 2:
        raise PncdError(f"unet base width must be an even number >= 2, got {base}; pass e.g. base=32")
    return UNet(in_channels, num_classes, base)
