"""UNet++ (Zhou, Rahman Siddiquee, Tajbakhsh, Liang, "UNet++: A Nested U-Net Architecture for
Medical Image Segmentation", DLMIA 2018): a teacher of the PNCD paper's Table 1 (20.6 M).

Topology (the paper's L4 network): nodes ``X(i, j)``, ``i`` = down-sampling level (stride
``2**i``), ``j`` = position along the skip pathway. The backbone column ``X(i, 0)`` is a
VGG-style encoder (2x2 max-pool between levels); every other node takes the concatenation of
all earlier nodes of its level, ``X(i, 0) ... X(i, j-1)``, plus the 2x up-sampled node below,
``X(i+1, j-1)`` (the nested dense skip pathways). Every node is two (3x3 conv -> BN -> ReLU).
A 1x1 classifier on ``X(0, 4)`` gives the logits.

Widths: ``base * (1, 2, 4, 8, 16)``. Zhou et al. use 32 (their Table 1 lists 9.04 M; 9.16 M
here) and EMKD's NestedUNet 64 (36.6 M); neither is the PNCD paper's 20.6 M. ``base=48`` (48,
96, 192, 384, 768), with bias-carrying convs followed by BatchNorm and parameter-free bilinear
up-sampling, gives 20.61 M parameters at 1 input channel and 2 classes, the paper's figure to
three digits, so it is the default here (``base=32`` gives Zhou's network).

Deep supervision (1x1 heads on ``X(0, 1..4)``, averaged or pruned at inference) is not built:
the training loop takes one output, and at inference UNet++ with deep supervision off returns
the final node's prediction, which is what this network returns.

Taps (as EMKD taps its NestedUNet): low = ``conv1_0``, ``X(1, 0)`` (2 * base channels, stride
2); high = ``conv3_0``, ``X(3, 0)``, the last stride-8 feature of the encoder (8 * base).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pncd.errors import PncdError
from pncd.models import Tap, register_model


def conv_node(cin: int, cout: int) -> nn.Sequential:
    """One UNet++ node: two (3x3 conv -> BN -> ReLU)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class UNetPlusPlus(nn.Module):
    """UNet++ L4 returning logits at the input size (input sides divisible by 16)."""

    size_multiple = 16

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base: int = 48) -> None:
        super().__init__()
        if base < 1:
            raise PncdError(f"unetpp base width must be >= 1, got {base}; pass e.g. base=48")
        w = [base * 2**i for i in range(5)]
        # Node X(i, j) is the module ``conv{i}_{j}``; names match the paper's notation.
        for i in range(5):
            setattr(self, f"conv{i}_0", conv_node(in_channels if i == 0 else w[i - 1], w[i]))
        for j in range(1, 5):
            for i in range(5 - j):
                setattr(self, f"conv{i}_{j}", conv_node(w[i] * j + w[i + 1], w[i]))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(w[0], num_classes, 1)
        self.taps = {"low": Tap("conv1_0", w[1], 2), "high": Tap("conv3_0", w[3], 8)}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # grid[i] holds X(i, 0), X(i, 1), ... as they are computed, column by column of the
        # backbone: X(i, 0) first, then every node it makes computable (diagonal order).
        grid: list[list[torch.Tensor]] = [[] for _ in range(5)]
        for i in range(5):
            below = self.pool(grid[i - 1][0]) if i else x
            grid[i].append(getattr(self, f"conv{i}_0")(below))
            for j in range(1, i + 1):
                level = i - j
                node = getattr(self, f"conv{level}_{j}")
                grid[level].append(node(torch.cat([*grid[level][:j], _up(grid[level + 1][j - 1])], dim=1)))
        return self.head(grid[0][4])


@register_model("unetpp", role="teacher", paper_params_m=20.6)
def unetpp(in_channels: int = 1, num_classes: int = 2, base: int = 48) -> nn.Module:
    """UNet++ teacher (20.6 M parameters in the PNCD paper's Table 1 at ``base=48``)."""
    return UNetPlusPlus(in_channels, num_classes, base)
