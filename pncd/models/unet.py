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
from pncd.models import Tap, init_convs, register_model


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """Two (3x3 conv -> BN -> ReLU), same padding."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def encoder_stages(in_channels: int, widths: list[int]) -> list[nn.Sequential]:
    """The five U-Net encoder levels: two convs, then four times (2x2 max-pool, two convs)."""
    return [double_conv(in_channels, widths[0])] + [
        nn.Sequential(nn.MaxPool2d(2), double_conv(cin, cout)) for cin, cout in zip(widths, widths[1:])]


def unet_forward(x: torch.Tensor, encoder: tuple[nn.Module, ...], decoder: tuple[nn.Module, ...],
                 head: nn.Module) -> torch.Tensor:
    """Encoder levels fine to coarse, then each decoder block takes the coarser output and the
    skip of its level (coarse to fine), then the classifier."""
    skips = []
    for level in encoder:
        x = level(x)
        skips.append(x)
    y = skips.pop()
    for block in decoder:
        y = block(y, skips.pop())
    return head(y)


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
        self.inc, self.down1, self.down2, self.down3, self.down4 = encoder_stages(in_channels, w)
        self.up1 = Up(w[4], w[3])
        self.up2 = Up(w[3], w[2])
        self.up3 = Up(w[2], w[1])
        self.up4 = Up(w[1], w[0])
        self.head = nn.Conv2d(w[0], num_classes, 1)
        self.taps = {"low": Tap("down1", w[1], 2), "high": Tap("down3", w[3], 8)}
        init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoder = (self.inc, self.down1, self.down2, self.down3, self.down4)
        return unet_forward(x, encoder, (self.up1, self.up2, self.up3, self.up4), self.head)


@register_model("unet", role="teacher", paper_params_m=None)
def unet(in_channels: int = 1, num_classes: int = 2, base: int = 32) -> nn.Module:
    """Classic U-Net teacher with BatchNorm; ``base=64`` is the paper's width (about 31 M)."""
    if base < 2 or base % 2:
        raise PncdError(f"unet base width must be an even number >= 2, got {base}; pass e.g. base=32")
    return UNet(in_channels, num_classes, base)
