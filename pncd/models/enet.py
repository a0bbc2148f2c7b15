"""ENet (Paszke et al., "ENet: A Deep Neural Network Architecture for Real-Time Semantic
Segmentation", 2016): the smallest student, about 0.35 M parameters.

Layout (the paper's Table 1): an initial block (3x3 stride-2 conv concatenated with a max-pool
of the input, 16 channels, stride 2), stage 1 (down to stride 4, 64 channels), stages 2 and 3
(down to stride 8, 128 channels, regular / dilated / asymmetric bottlenecks), stages 4 and 5
(up-sampling bottlenecks that reuse the encoder's max-pool positions) and a transposed conv
back to the input size.

The down-sampling bottleneck's main branch is max-pool + zero channel padding, as in the
paper (EMKD's public ENet uses a 1x1 conv + BN there, which adds 9.6 k parameters: 0.367 M in
all, against the 0.353 M the PNCD paper quotes; this file has 0.357 M at 1 or 3 input
channels and 2 classes). Where the paper leaves room the choices follow EMKD: convolutions
carry no bias, up-sampling uses 2x2 transposed convs, one PReLU slope per layer; spatial
dropout is 0.01 in stage 1 and 0.1 after (the paper). EMKD silently skips its bottleneck 3.5
in the forward pass; here every block runs.

Departure for deployment: max-unpooling is computed from a "first maximum of each 2x2 window"
mask instead of MaxPool indices + MaxUnpool. The result is identical to
``F.max_unpool2d(y, indices)`` (torch picks the first maximum in raster order, so does the
mask; the tests check this), but the exported graph holds only common ONNX ops (Slice, Max,
Equal, And, Not, Where, Pad, DepthToSpace). TensorRT's ONNX parser supports neither MaxUnpool
nor MaxPool's indices output.

Taps (as in EMKD): low = the initial block (16 channels, stride 2); high = the last stride-8
feature, bottleneck 3.8 (128 channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pncd.errors import PncdError
from pncd.models import Tap, init_convs, register_model


def _conv_bn(cin: int, cout: int, kernel, stride: int = 1, padding=0, dilation: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.PReLU())
    return nn.Sequential(*layers)


def pool_with_mask(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2x2 max-pooling and where each window's first maximum (raster order) sits.

    Returns the pooled tensor ``(B, C, H/2, W/2)`` (equal to ``F.max_pool2d(x, 2)``) and a bool
    mask ``(B, C, 4, H/2, W/2)`` whose slot k marks window position (k // 2, k % 2). The maximum
    is taken over four strided slices rather than by MaxPool: ONNX Runtime's FP16 CPU kernels
    compare a MaxPool output with a slice of its input wrongly (ORT 1.32), Max is safe.
    """
    corners = [x[:, :, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]
    pooled = torch.maximum(torch.maximum(corners[0], corners[1]), torch.maximum(corners[2], corners[3]))
    taken: torch.Tensor | None = None
    slots = []
    for corner in corners:
        hit = corner == pooled
        if taken is None:
            slots.append(hit)
            taken = hit
        else:
            slots.append(hit & ~taken)
            taken = taken | hit
    return pooled, torch.stack(slots, dim=2)


def unpool_with_mask(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Place each value of ``y`` (B, C, h, w) at its window's recorded maximum: (B, C, 2h, 2w)."""
    # where() rather than a multiply by mask.to(dtype): a Cast to float32 in the graph breaks
    # the FP16 conversion of the exported model (onnxconverter-common leaves its target type).
    spread = torch.where(mask, y.unsqueeze(2), torch.zeros((), dtype=y.dtype, device=y.device))  # (B, C, 4, h, w)
    return F.pixel_shuffle(spread.flatten(1, 2), 2)


class InitialBlock(nn.Module):
    """3x3 stride-2 conv (16 - in_channels filters) beside a 2x2 max-pool of the input."""

    def __init__(self, in_channels: int, out_channels: int = 16) -> None:
        super().__init__()
        if in_channels >= out_channels:
            raise PncdError(f"ENet takes fewer than {out_channels} input channels, got {in_channels}; use 1 or 3")
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, stride=2, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2, 2)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class Bottleneck(nn.Module):
    """Residual bottleneck: 1x1 reduce -> regular / dilated / asymmetric conv -> 1x1 expand."""

    def __init__(self, channels: int, inner: int, dilation: int = 1, asymmetric: bool = False, dropout: float = 0.1) -> None:
        super().__init__()
        self.reduce = _conv_bn(channels, inner, 1)
        if asymmetric:
            self.conv = nn.Sequential(
                nn.Conv2d(inner, inner, (5, 1), padding=(2, 0), bias=False),
                nn.Conv2d(inner, inner, (1, 5), padding=(0, 2), bias=False),
                nn.BatchNorm2d(inner),
                nn.PReLU(),
            )
        else:
            self.conv = _conv_bn(inner, inner, 3, padding=dilation, dilation=dilation)
        self.expand = _conv_bn(inner, channels, 1, act=False)
        self.drop = nn.Dropout2d(dropout)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.drop(self.expand(self.conv(self.reduce(x)))))


class DownBottleneck(nn.Module):
    """Halves the resolution; returns the features and the max-pool positions for the decoder."""

    def __init__(self, cin: int, inner: int, cout: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.extra = cout - cin  # zero channels appended to the pooled main branch
        self.reduce = _conv_bn(cin, inner, 2, stride=2)
        self.conv = _conv_bn(inner, inner, 3, padding=1)
        self.expand = _conv_bn(inner, cout, 1, act=False)
        self.drop = nn.Dropout2d(dropout)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, mask = pool_with_mask(x)
        ext = self.drop(self.expand(self.conv(self.reduce(x))))
        main = F.pad(pooled, (0, 0, 0, 0, 0, self.extra))
        return self.act(main + ext), mask


class UpBottleneck(nn.Module):
    """Doubles the resolution: max-unpooling at the encoder's positions plus a transposed conv."""

    def __init__(self, cin: int, inner: int, cout: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.main = _conv_bn(cin, cout, 1, act=False)
        self.reduce = _conv_bn(cin, inner, 1)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(inner, inner, 2, stride=2, bias=False), nn.BatchNorm2d(inner), nn.PReLU()
        )
        self.expand = _conv_bn(inner, cout, 1, act=False)
        self.drop = nn.Dropout2d(dropout)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        main = unpool_with_mask(self.main(x), mask)
        ext = self.drop(self.expand(self.up(self.reduce(x))))
        return self.act(main + ext)


def _stage_2_or_3() -> list[nn.Module]:
    """Bottlenecks x.1 - x.8: regular, dilated 2, asymmetric 5, dilated 4, regular, dilated 8,
    asymmetric 5, dilated 16."""
    plan = [(1, False), (2, False), (1, True), (4, False), (1, False), (8, False), (1, True), (16, False)]
    return [Bottleneck(128, 32, dilation=d, asymmetric=a) for d, a in plan]


class ENet(nn.Module):
    """ENet returning logits at the input size (input sides divisible by 8)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.initial = InitialBlock(in_channels, 16)
        self.down1 = DownBottleneck(16, 16, 64, dropout=0.01)
        self.stage1 = nn.Sequential(*[Bottleneck(64, 16, dropout=0.01) for _ in range(4)])
        self.down2 = DownBottleneck(64, 32, 128)
        self.stage2 = nn.Sequential(*_stage_2_or_3())
        self.stage3 = nn.Sequential(*_stage_2_or_3())
        self.up4 = UpBottleneck(128, 16, 64)
        self.stage4 = nn.Sequential(Bottleneck(64, 16), Bottleneck(64, 16))
        self.up5 = UpBottleneck(64, 4, 16)
        self.stage5 = Bottleneck(16, 4)
        self.fullconv = nn.ConvTranspose2d(16, num_classes, 2, stride=2, bias=False)
        self.taps = {"low": Tap("initial", 16, 2), "high": Tap("stage3", 128, 8)}
        init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.initial(x)
        x, mask1 = self.down1(x)
        x = self.stage1(x)
        x, mask2 = self.down2(x)
        x = self.stage3(self.stage2(x))
        x = self.stage4(self.up4(x, mask2))
        x = self.stage5(self.up5(x, mask1))
        return self.fullconv(x)


@register_model("enet", role="student", paper_params_m=0.353)
def enet(in_channels: int = 1, num_classes: int = 2) -> nn.Module:
    """ENet student (0.353 M parameters in the PNCD paper)."""
    return ENet(in_channels, num_classes)
