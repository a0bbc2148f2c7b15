"""Attention U-Net (Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas",
MIDL 2018), 2-D: a U-Net whose skip connections pass through attention gates. One of the
teachers the PNCD paper compares against (its Table 2, no parameter count given).

* **U-Net** with BatchNorm: five levels of two (3x3 conv -> BN -> ReLU), 2x2 max-pool between
  them; the decoder up-samples with 2x2 transposed convs, concatenates the gated skip feature
  and applies two convs again; a 1x1 classifier.
* **Attention gate** (the paper's additive "grid" attention, eq. 1-2): for a skip feature
  ``x`` (stride s) and the gating signal ``g``, the decoder feature one level coarser (stride
  2s): ``q = psi(ReLU(W_x x + W_g g))`` where ``W_x`` is a 2x2 stride-2 conv (it brings ``x``
  to ``g``'s grid, as the authors' code does), ``W_g`` a 1x1 conv and ``psi`` a 1x1 conv to one
  channel; ``alpha = sigmoid(q)`` is up-sampled bilinearly to ``x``'s size and the gated
  feature ``alpha * x`` passes a 1x1 conv + BN (the authors' output transform). Every one of
  the four skips is gated (the paper's Fig. 1); the intermediate width is half the skip's.

Widths: ``base * (1, 2, 4, 8, 16)``. The default ``base=16`` is the authors' released
configuration (U-Net's 64 ... 1024 divided by their ``feature_scale=4``): 2.03 M parameters at
1 input channel and 2 classes. ``base=64`` gives the wide version most 2-D re-implementations
use (32.4 M). The paper's deep supervision and its gating-signal 1x1 block are left out (the
training loop takes one output; ``W_g`` already projects the gating feature).

Taps: low = ``enc2`` (2 * base channels, stride 2); high = ``enc4``, the last stride-8 feature
of the encoder (8 * base channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pncd.errors import PncdError
from pncd.models import Tap, init_convs, register_model
from pncd.models.unet import double_conv, encoder_stages, unet_forward


class AttentionGate(nn.Module):
    """Additive attention gate: weights a skip feature by a gating signal one level coarser."""

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(skip_channels, inter_channels, 2, stride=2, bias=False)
        self.phi = nn.Conv2d(gate_channels, inter_channels, 1)
        self.psi = nn.Conv2d(inter_channels, 1, 1)
        self.out = nn.Sequential(nn.Conv2d(skip_channels, skip_channels, 1), nn.BatchNorm2d(skip_channels))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        q = self.psi(F.relu(self.theta(x) + self.phi(g)))
        alpha = F.interpolate(torch.sigmoid(q), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out(alpha * x)


class GatedUp(nn.Module):
    """Up-sample the coarser feature, gate the skip with it, concatenate, two convs."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.gate = AttentionGate(cout, cin, max(cout // 2, 1))
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = double_conv(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.gate(skip, x), self.up(x)], dim=1))


class AttentionUNet(nn.Module):
    """Attention U-Net returning logits at the input size (input sides divisible by 16)."""

    size_multiple = 16

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base: int = 16) -> None:
        super().__init__()
        if base < 2:
            raise PncdError(f"attention_unet base width must be >= 2, got {base}; pass e.g. base=16")
        w = [base * 2**i for i in range(5)]
        self.enc1, self.enc2, self.enc3, self.enc4, self.center = encoder_stages(in_channels, w)
        self.up4 = GatedUp(w[4], w[3])
        self.up3 = GatedUp(w[3], w[2])
        self.up2 = GatedUp(w[2], w[1])
        self.up1 = GatedUp(w[1], w[0])
        self.head = nn.Conv2d(w[0], num_classes, 1)
        self.taps = {"low": Tap("enc2", w[1], 2), "high": Tap("enc4", w[3], 8)}
        init_convs(self)
        for m in self.modules():
            if isinstance(m, AttentionGate):
                # fan-in scale for the one-channel gate logit: the gates start unsaturated (near
                # 0.5); fan-out scaling (std 1.4) would start most gates shut.
                nn.init.kaiming_normal_(m.psi.weight, mode="fan_in", nonlinearity="sigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoder = (self.enc1, self.enc2, self.enc3, self.enc4, self.center)
        return unet_forward(x, encoder, (self.up4, self.up3, self.up2, self.up1), self.head)


@register_model("attention_unet", role="teacher")
def attention_unet(in_channels: int = 1, num_classes: int = 2, base: int = 16) -> nn.Module:
    """Attention U-Net teacher (2.03 M parameters at the authors' widths, ``base=16``)."""
    return AttentionUNet(in_channels, num_classes, base)
