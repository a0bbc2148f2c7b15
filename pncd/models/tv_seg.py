"""MobileNetV2 and ResNet-18 students: a torchvision backbone dilated to output stride 8, a 1x1
classifier and bilinear up-sampling to the input size (about 2.2 M and 11.2 M parameters).

Both share one wiring (:class:`DilatedSeg`); only the backbone surgery differs:

* MobileNetV2 (``torchvision.models.mobilenet_v2``): ``features`` 0-18, the last 1x1 conv to
  1280 channels included (that is where the paper's 2.2 M comes from). The depthwise convs of
  blocks 7-13 (which would reach stride 16) get stride 1 and dilation 2, those of blocks 14-17
  (stride 32) dilation 4, as torchvision's dilated MobileNetV3 does.
* ResNet-18 (``torchvision.models.resnet18``): layer3 and layer4 lose their stride and get
  dilation 2 and 4. torchvision's ``replace_stride_with_dilation`` refuses BasicBlock, so the
  same rule is applied by hand: the first block of a dilated layer keeps the previous
  dilation, the others take the new one.

Taps: low = the stride-2 feature (MobileNetV2 ``features.0``, 32 channels, as in EMKD;
ResNet-18 the stem's ReLU, 64 channels), high = the last stride-8 feature of the encoder
(MobileNetV2 ``features.18``, 1280 channels; ResNet-18 ``layer4``, 512 channels; EMKD's
undilated ResNet-18 tapped layer2, its last stride-8 feature).

ImageNet weights: ``pretrained=PATH`` names a local torchvision state_dict (``torch.save`` of
``model.state_dict()``, loaded with ``weights_only=True``; ``.safetensors`` also works).
Nothing is downloaded. For other than 3 input channels the first conv's RGB filters are
averaged and scaled by 3 / in_channels (for 1 channel: summed), so a grey image that was
replicated to RGB gives the same response.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from pncd.errors import PncdError
from pncd.models import Tap, register_model


class DilatedSeg(nn.Module):
    """``backbone`` (stride 8) -> 1x1 classifier -> bilinear up-sampling to the input size."""

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int, taps: dict[str, Tap]) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.taps = taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` (built for RGB) that takes ``in_channels`` channels."""
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        cast(tuple[int, int], conv.kernel_size),
        stride=cast(tuple[int, int], conv.stride),
        padding=cast("str | tuple[int, int]", conv.padding),
        dilation=cast(tuple[int, int], conv.dilation),
        bias=conv.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
    return new


def _set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    """Stride 1 and the given dilation for a 3x3 conv (padding keeps the size)."""
    conv.stride = (1, 1)
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation, dilation)


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A torchvision state_dict from a local file, never executing code from it."""
    path = Path(path)
    if not path.is_file():
        raise PncdError(f"{path}: pretrained weights not found; pass a local torchvision state_dict file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise PncdError(f"{path}: not a readable weights file ({type(e).__name__}: {e}); "
                        "save it with torch.save(model.state_dict(), path)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PncdError(f"{path}: expected a state_dict (a dict of tensors); save it with torch.save(model.state_dict(), path)")
    return state


RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def resnet_encoder(net: nn.Module, in_channels: int, pretrained: str | Path | None) -> nn.Sequential:
    """A torchvision ResNet's stages as a named Sequential (module paths ``conv1`` ... ``layer4``,
    usable as taps), its first conv adapted to ``in_channels``, optionally local ImageNet weights."""
    net.conv1 = _adapt_first_conv(cast(nn.Conv2d, net.conv1), in_channels)
    encoder = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in RESNET_STAGES))
    if pretrained:
        _load_pretrained(encoder, pretrained, prefix="", first_conv="conv1.weight")
    return encoder


def _load_pretrained(backbone: nn.Module, path: str | Path, prefix: str, first_conv: str) -> None:
    """Load ``prefix``-ed keys of a torchvision state_dict into ``backbone`` (classifier dropped).

    ``first_conv`` is the backbone's key of the first conv weight, adapted to its input channels.
    """
    state = _read_state_dict(path)
    own = backbone.state_dict()
    picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in own}
    missing = sorted(set(own) - set(picked))
    if missing:
        raise PncdError(
            f"{path} does not fit this torchvision backbone: {len(missing)} weights missing "
            f"(e.g. {missing[:3]}); pass the state_dict of the matching torchvision model"
        )
    w = picked[first_conv]
    want = own[first_conv].shape[1]
    if w.shape[1] != want:
        # Averaged RGB filters scaled by 3 / C: a grey image replicated to RGB responds the same.
        w = w.mean(dim=1, keepdim=True).repeat(1, want, 1, 1) * (w.shape[1] / want)
        picked[first_conv] = w
    shapes = [k for k, v in picked.items() if tuple(v.shape) != tuple(own[k].shape)]
    if shapes:
        raise PncdError(f"{path}: weights of another shape (e.g. {shapes[:3]}); pass the matching torchvision model's state_dict")
    backbone.load_state_dict(picked)


def _mobilenetv2_backbone(in_channels: int) -> nn.Sequential:
    from torchvision.models import mobilenet_v2

    features = mobilenet_v2(weights=None).features
    features[0][0] = _adapt_first_conv(features[0][0], in_channels)
    for index in range(7, 18):
        dilation = 2 if index < 14 else 4
        for m in features[index].modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                _set_dilation(m, dilation)
    return features


def _resnet18_backbone(in_channels: int) -> nn.Sequential:
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.conv1 = _adapt_first_conv(net.conv1, in_channels)
    for layer, previous, dilation in ((net.layer3, 1, 2), (net.layer4, 2, 4)):
        for i, block in enumerate(layer):
            for conv in (block.conv1, block.conv2):
                _set_dilation(conv, previous if i == 0 else dilation)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    return nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))


def _student(backbone: nn.Sequential, pretrained: str | None, prefix: str, first_conv: str,
             taps: dict[str, Tap], channels: int, num_classes: int) -> nn.Module:
    """A dilated torchvision backbone (ImageNet weights loaded from ``pretrained`` if given)
    with the segmentation head on its last feature (``channels`` wide)."""
    if pretrained:
        _load_pretrained(backbone, pretrained, prefix=prefix, first_conv=first_conv)
    return DilatedSeg(backbone, channels, num_classes, taps)


@register_model("mobilenetv2", role="student", paper_params_m=2.2)
def mobilenetv2(in_channels: int = 1, num_classes: int = 2, pretrained: str | None = None) -> nn.Module:
    """MobileNetV2 student, output stride 8 (2.2 M parameters in the PNCD paper)."""
    taps = {"low": Tap("backbone.0", 32, 2), "high": Tap("backbone.18", 1280, 8)}
    return _student(_mobilenetv2_backbone(in_channels), pretrained, "features.", "0.0.weight", taps, 1280, num_classes)


@register_model("resnet18", role="student", paper_params_m=11.2)
def resnet18(in_channels: int = 1, num_classes: int = 2, pretrained: str | None = None) -> nn.Module:
    """ResNet-18 student, output stride 8 (11.2 M parameters in the PNCD paper)."""
    taps = {"low": Tap("backbone.relu", 64, 2), "high": Tap("backbone.layer4", 512, 8)}
    return _student(_resnet18_backbone(in_channels), pretrained, "", "conv1.weight", taps, 512, num_classes)
