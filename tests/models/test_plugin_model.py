"""Adding a network is one file with one decorator line: a toy network, registered at run time
exactly as a new ``pncd/models/NAME.py`` registers itself, trains and exports through the real
CLI (in-process, since the toy exists in this process only). The fixture removes its registry
entry afterwards (pncd's Registry has no unregister)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from pncd import models
from pncd.cli import main
from pncd.models import Tap, register_model


class ToyNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.low = nn.Sequential(nn.Conv2d(in_channels, 8, 3, stride=2, padding=1), nn.ReLU())
        self.high = nn.Sequential(nn.Conv2d(8, 16, 3, stride=4, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, num_classes, 1)
        self.taps = {"low": Tap("low", 8, 2), "high": Tap("high", 16, 8)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.high(self.low(x)))
        return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.fixture
def toy_model():
    models.list_models()  # the real architectures first
    register_model("toy_plugin", role="student")(lambda in_channels=1, num_classes=2: ToyNet(in_channels, num_classes))
    yield "toy_plugin"
    models.MODELS._items.pop("toy_plugin", None)
    models.MODELS._meta.pop("toy_plugin", None)


def cli(*args) -> int:
    with pytest.raises(SystemExit) as e:
        main([*map(str, args)])
    return int(e.value.code or 0)


def test_a_registered_network_trains_and_exports(toy_model, synthetic_root, tmp_path):
    assert toy_model in models.list_models(role="student")
    run = tmp_path / "run"
    assert cli("train", "--model", toy_model, "--data", synthetic_root, "--size", "64", "--epochs", "1",
               "--steps-per-epoch", "3", "--batch", "4", "--out", run, "--threads", "1") == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["name"] == toy_model and (run / "best.safetensors").is_file()
    out = tmp_path / "export"
    assert cli("export", run, "--target", "onnxruntime", "--precision", "fp32", "--out", out) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["model"]["name"] == toy_model and man["parity"]["argmax_agreement"] > 0.999
