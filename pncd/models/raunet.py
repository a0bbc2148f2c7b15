"""RA-UNet, a residual attention U-Net: the PNCD paper's Table 1 teacher T2 (22.1 M parameters).

Which network: the PNCD paper cites Jin et al. ("RA-UNet: A hybrid deep attention-aware
network to extract liver and tumor in CT scans", Frontiers in Bioengineering and
Biotechnology 2020) but reports 22.1 M parameters, and Jin's network cannot give that at its
published widths: by our count, its 2-D form (pre-activation bottleneck residual units with
widths 4f ... 64f and Wang et al.'s attention modules on the skips) has 0.52 M parameters at
f = 4 (Jin's 2-D liver network), 2.0 M at f = 8 (Jin's 3-D width) and reaches 22 M only at an
unpublished f = 26. The count is matched, to three digits, by the *RAUNet* of Ni, Zhou, Li,
Wang, Zhang and Liu ("RAUNet: Residual Attention U-Net for Semantic Segmentation of Cataract
Surgical Instruments", ICONIP 2019), the network EMKD ships under that name (EMKD is the public
code whose loss weights, student sizes and module names the PNCD paper matches: Qin et al.,
IEEE TMI 2021). So this file builds Ni et al.'s RAUNet: 22.14 M parameters at 1 input channel
and 2 classes.

Layout:

* **Encoder**: torchvision's ResNet-34 (``weights=None``; ``pretrained=PATH`` loads a local
  torchvision state_dict, nothing is downloaded): the 7x7 stride-2 stem (stride 2, 64
  channels), max-pool, then layer1 - layer4 (64, 128, 256, 512 channels at strides 4 - 32).
* **Decoder**: four LinkNet blocks (1x1 conv to c/4 -> 4x4 stride-2 transposed conv -> 1x1
  conv, each with BN + ReLU), from stride 32 up to stride 2.
* **Augmented attention modules** (AAM) fuse each decoder output with the encoder feature of
  its size: both are globally average-pooled and passed through 1x1 conv + BN + ReLU, their
  sum through a 1x1 conv and a softmax over channels gives channel weights; the encoder
  feature (1x1 conv + BN + ReLU) times those weights is added to the decoder feature.
* **Head** (LinkNet's): 3x3 stride-2 transposed conv to 32 channels, ReLU, 3x3 conv, ReLU and a
  classifier conv. LinkNet's uses unpadded convs and a 2x2 classifier with padding 1 to land
  on the input size; here the transposed conv has output padding and the others same
  padding, and the classifier is 1x1 (192 fewer parameters).

Input sides must be divisible by 32 (five halvings); ``forward`` raises a PncdError otherwise.
Since the AAMs normalise pooled (B, C, 1, 1) features with BatchNorm, training needs batches
of at least 2 (as the original).

Taps (EMKD's): low = the stem's ReLU (``encoder.relu``, 64 channels, stride 2); high =
``encoder.layer2``, the last stride-8 feature of the encoder (128 channels).
"""

from __future__ import annotations


from typing import Any

import torch
from torch import nn

from pncd.models import Tap, check_input_size, register_model


class LinkNetUp(nn.Module):
    """LinkNet decoder block: 1x1 to c/4, 2x transposed conv, 1x1 to ``cout`` (BN + ReLU each)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin // 4
        self.block = nn.Sequential(
            nn.Conv2d(cin, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(mid, mid, 4, stride=2, padding=1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _conv1x1_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class AugmentedAttention(nn.Module):
    """AAM: channel weights from both features' global context re-weight the encoder feature."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.high_context = _conv1x1_bn_relu(channels, channels)
        self.low_context = _conv1x1_bn_relu(channels, channels)
        self.weights = nn.Conv2d(channels, channels, 1)
        self.low = _conv1x1_bn_relu(channels, channels)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        context = self.high_context(high.mean(dim=(2, 3), keepdim=True)) + self.low_context(low.mean(dim=(2, 3), keepdim=True))
        weight = torch.softmax(self.weights(context), dim=1)
        return high + self.low(low) * weight


def _resnet34_encoder(in_channels: int, pretrained: str | None) -> nn.Sequential:
    from torchvision.models import resnet34

    from pncd.models.tv_seg import resnet_encoder

    return resnet_encoder(resnet34(weights=None), in_channels, pretrained)


class RAUNet(nn.Module):
    """Ni et al.'s RAUNet returning logits at the input size (input sides divisible by 32)."""

    size_multiple = 32

    def __init__(self, in_channels: int = 1, num_classes: int = 2, pretrained: str | None = None) -> None:
        super().__init__()
        self.encoder = _resnet34_encoder(in_channels, pretrained)
        self.decoder4 = LinkNetUp(512, 256)
        self.decoder3 = LinkNetUp(256, 128)
        self.decoder2 = LinkNetUp(128, 64)
        self.decoder1 = LinkNetUp(64, 64)
        self.attention3 = AugmentedAttention(256)
        self.attention2 = AugmentedAttention(128)
        self.attention1 = AugmentedAttention(64)
        self.head = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, num_classes, 1),
        )
        self.taps = {"low": Tap("encoder.relu", 64, 2), "high": Tap("encoder.layer2", 128, 8)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.size_multiple, "raunet")
        e: Any = self.encoder  # a Sequential of named torchvision stages
        x = e.maxpool(e.relu(e.bn1(e.conv1(x))))
        e1 = e.layer1(x)
        e2 = e.layer2(e1)
        e3 = e.layer3(e2)
        e4 = e.layer4(e3)
        d = self.attention3(self.decoder4(e4), e3)
        d = self.attention2(self.decoder3(d), e2)
        d = self.attention1(self.decoder2(d), e1)
        return self.head(self.decoder1(d))


@register_model("raunet", role="teacher", paper_params_m=22.1)
def raunet(in_channels: int = 1, num_classes: int = 2, pretrained: str | None = None) -> nn.Module:
    """RA-UNet teacher (Ni et al.'s RAUNet, 22.1 M parameters in the PNCD paper's Table 1)."""
    return RAUNet(in_channels, num_classes, pretrained)
