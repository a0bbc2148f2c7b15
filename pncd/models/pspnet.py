"""PSPNet (Zhao, Shi, Qi, Wang, Jia, "Pyramid Scene Parsing Network", CVPR 2017): a pyramid
pooling module on a dilated ResNet. One of the teachers the PNCD paper compares against (its
Table 2, no parameter count given).

* **Backbone**: torchvision's ResNet-50 (``weights=None``; ``pretrained=PATH`` loads a local
  torchvision state_dict, nothing is downloaded) with layer3 and layer4 dilated (2 and 4)
  instead of strided, so the feature map stays at stride 8 (2048 channels), as in the paper.
  Zhao et al. replace the 7x7 stem by three 3x3 convs; torchvision's stem is kept here.
* **Pyramid pooling module**: the stride-8 feature averaged into 1x1, 2x2, 3x3 and 6x6 bins
  (adaptive average pooling), each bin map through a 1x1 conv to 512 channels (2048 / 4) + BN
  + ReLU and up-sampled bilinearly back to the feature size; the four are concatenated with
  the feature (4096 channels).
* **Head**: 3x3 conv to 512 + BN + ReLU, dropout 0.1, 1x1 classifier, bilinear up-sampling to
  the input size. The paper's auxiliary loss head on layer3 (training only) is left out: the
  training loop takes one output.

46.6 M parameters at 1 input channel and 2 classes (``backbone="resnet101"``: 65.6 M).

Export: adaptive average pooling exports to ONNX only when the bins divide the feature size
(a 64 x 64 input gives an 8 x 8 feature, which 3 and 6 do not divide). The pooling here is
written as two small averaging matrices built from the feature's size with tensor ops
(``P_h @ x @ P_w^T``, bin ``i`` of ``n`` covering ``[floor(i n / b), ceil((i + 1) n / b))``,
exactly torch's adaptive average pooling); it exports with dynamic height and width and runs
in ONNX Runtime, OpenVINO and TensorRT. So any input size works; input sides divisible by 8
keep the taps at exactly 1/2 and 1/8 of the input (the only constraint, ``size_multiple``).

Taps: low = the stem's ReLU (``backbone.relu``, 64 channels, stride 2); high =
``backbone.layer4``, the last stride-8 feature of the encoder (2048 channels). BatchNorm on
the 1x1 bin needs training batches of at least 2.
"""

from __future__ import annotations


from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from pncd.errors import PncdError
from pncd.models import Tap, register_model

BINS = (1, 2, 3, 6)


def bin_matrix(n: torch.Tensor | int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """``(bins, n)`` averaging matrix of adaptive average pooling along one axis of length n.

    Row ``i`` averages positions ``floor(i n / bins)`` to ``ceil((i + 1) n / bins) - 1``, as
    ``F.adaptive_avg_pool2d`` does. Built from integer tensor ops so a traced export keeps
    ``n`` symbolic.
    """
    n = cast(int, n)  # an int in eager mode, a 0-d tensor under the tracing exporter
    i = torch.arange(bins, device=like.device)
    start = torch.div(i * n, bins, rounding_mode="floor")
    end = torch.div((i + 1) * n + (bins - 1), bins, rounding_mode="floor")
    pos = torch.arange(n, device=like.device)
    inside = (pos.unsqueeze(0) >= start.unsqueeze(1)) & (pos.unsqueeze(0) < end.unsqueeze(1))
    weights = inside.to(like.dtype)
    return weights / weights.sum(dim=1, keepdim=True)


def adaptive_avg_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` as two matrix products (exportable at any size)."""
    rows = bin_matrix(x.shape[-2], bins, x)
    cols = bin_matrix(x.shape[-1], bins, x)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


class PyramidPooling(nn.Module):
    """Pool into each bin grid, 1x1 conv + BN + ReLU, up-sample, concatenate with the input."""

    def __init__(self, channels: int, bins: tuple[int, ...] = BINS) -> None:
        super().__init__()
        self.bins = bins
        reduced = channels // len(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, reduced, 1, bias=False), nn.BatchNorm2d(reduced), nn.ReLU(inplace=True))
            for _ in bins
        )
        self.out_channels = channels + reduced * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(stage(adaptive_avg_pool(x, b)), size=size, mode="bilinear", align_corners=False)
            for b, stage in zip(self.bins, self.stages)
        ]
        return torch.cat([x, *pooled], dim=1)


def _dilated_resnet(name: str, in_channels: int, pretrained: str | None) -> nn.Sequential:
    import torchvision.models as tvm

    from pncd.models.tv_seg import resnet_encoder

    if name not in ("resnet50", "resnet101"):
        raise PncdError(f"pspnet backbone {name!r} is not supported; use resnet50 or resnet101")
    net = getattr(tvm, name)(weights=None, replace_stride_with_dilation=[False, True, True])
    return resnet_encoder(net, in_channels, pretrained)


class PSPNet(nn.Module):
    """PSPNet returning logits at the input size (any size; sides divisible by 8 recommended)."""

    size_multiple = 8

    def __init__(self, in_channels: int = 1, num_classes: int = 2, backbone: str = "resnet50",
                 pretrained: str | None = None) -> None:
        super().__init__()
        self.backbone = _dilated_resnet(backbone, in_channels, pretrained)
        self.ppm = PyramidPooling(2048)
        self.head = nn.Sequential(
            nn.Conv2d(self.ppm.out_channels, 512, 3, padding=1, bias=False),
            nn.BatchNorm2d(512),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.1),
            nn.Conv2d(512, num_classes, 1),
        )
        self.taps = {"low": Tap("backbone.relu", 64, 2), "high": Tap("backbone.layer4", 2048, 8)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.ppm(self.backbone(x)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model("pspnet", role="teacher")
def pspnet(in_channels: int = 1, num_classes: int = 2, backbone: str = "resnet50", pretrained: str | None = None) -> nn.Module:
    """PSPNet teacher on a dilated ResNet-50 (46.6 M parameters)."""
    return PSPNet(in_channels, num_classes, backbone, pretrained)
