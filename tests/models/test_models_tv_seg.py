"""MobileNetV2 / ResNet-18 students: output stride 8 by dilation, and local ImageNet weights.

The "ImageNet" files here are real torchvision state_dicts written with ``torch.save`` (random
weights: nothing can be downloaded in tests); loading must map them onto the backbone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from pncd import models
from pncd.errors import PncdError


@pytest.fixture(scope="module")
def tv_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tv")
    torch.manual_seed(0)
    files = {}
    for name, ctor in (("resnet18", torchvision.models.resnet18), ("mobilenetv2", torchvision.models.mobilenet_v2)):
        files[name] = root / f"{name}.pth"
        torch.save(ctor(weights=None).state_dict(), files[name])
    return files


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet18"])
def test_backbone_output_stride_is_8(name: str) -> None:
    model = models.create(name, in_channels=1, num_classes=2).eval()
    with torch.no_grad():
        feat = model.backbone(torch.randn(1, 1, 64, 96))
    assert feat.shape[-2:] == (8, 12)
    assert feat.shape[1] == model.classifier.in_channels


# (our key, torchvision key) of the first conv, and of every other loaded tensor's prefix.
KEYS = {
    "resnet18": (("backbone.conv1.weight", "conv1.weight"), ("backbone.", "")),
    "mobilenetv2": (("backbone.0.0.weight", "features.0.0.weight"), ("backbone.", "features.")),
}


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet18"])
def test_pretrained_state_dict_is_loaded(name: str, tv_files: dict[str, Path]) -> None:
    ref = torch.load(tv_files[name], weights_only=True)
    (first, tv_first), (ours, theirs) = KEYS[name]
    for channels in (1, 3):
        state = models.create(name, in_channels=channels, num_classes=2, pretrained=str(tv_files[name])).state_dict()
        backbone = {k: v for k, v in state.items() if k.startswith(ours) and k != first}
        assert len(backbone) > 100  # weights and BatchNorm statistics
        for key, value in backbone.items():
            assert torch.equal(value, ref[theirs + key[len(ours):]]), key
        if channels == 3:
            assert torch.equal(state[first], ref[tv_first])
        else:  # the RGB filters summed: a grey image replicated to RGB responds the same
            assert state[first].shape[1] == 1
            assert torch.allclose(state[first], ref[tv_first].sum(dim=1, keepdim=True), atol=1e-6)


def test_grey_model_matches_rgb_model_on_replicated_input(tv_files: dict[str, Path]) -> None:
    grey = models.create("resnet18", in_channels=1, num_classes=2, pretrained=str(tv_files["resnet18"])).eval()
    rgb = models.create("resnet18", in_channels=3, num_classes=2, pretrained=str(tv_files["resnet18"])).eval()
    rgb.classifier.load_state_dict(grey.classifier.state_dict())
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(grey(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-4)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(PncdError, match="nope.pth"):
        models.create("resnet18", pretrained=str(path))


def test_other_models_weights_are_refused(tv_files: dict[str, Path]) -> None:
    with pytest.raises(PncdError, match="does not fit"):
        models.create("mobilenetv2", pretrained=str(tv_files["resnet18"]))


class _Boom:
    """Unpickling this object would run code (writes a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Boom(marker)}, path)
    with pytest.raises(PncdError, match="evil.pth"):
        models.create("resnet18", pretrained=str(path))
    assert not marker.exists()


def test_non_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(PncdError, match="state_dict"):
        models.create("resnet18", pretrained=str(path))
