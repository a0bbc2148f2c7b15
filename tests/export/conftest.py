"""Fixtures for the export tests: images, per-model FP32 ONNX files, tiny run directories.

Everything runs at 32 x 32 (or a network's stricter size multiple, 64 for Swin-UNet) on the
session's synthetic data set (``synthetic_root``). Each
registered network is exported to ONNX once per session (the dynamo exporter costs seconds per
model) and every target/precision test builds from that file with the same code the CLI runs.

Untrained networks get BatchNorm statistics from a few synthetic images before export (a
forward pass in train mode, no gradients): with the default running statistics (mean 0,
variance 1) activations grow layer by layer (ENet's logits reach about 1e4), an input range no
trained network has, and FP16 parity would measure that artefact instead of the export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import settle_batchnorm

from export_helpers import SIZE


@pytest.fixture(scope="session")
def data_spec(synthetic_root: Path) -> dict:
    from pncd.data import DataSpec

    return DataSpec(root=str(synthetic_root), size=SIZE).to_dict()


@pytest.fixture(scope="session")
def held_out(data_spec):
    from pncd.export.calibration import held_out_images

    return held_out_images(data_spec, 8, (SIZE, SIZE))


def calibrate_batchnorm(model: nn.Module, images: np.ndarray) -> nn.Module:
    """Set BatchNorm running statistics from ``images`` (4 at a time), then eval mode."""
    return settle_batchnorm(model, (torch.from_numpy(images[i : i + 4]) for i in range(0, len(images), 4)))


def onnx_with_fp16_weights(src: Path, dst: Path) -> Path:
    """A copy of an FP32 ONNX whose float weights (initializers, Constant tensors) are rounded to
    FP16 and stored back as FP32: the weights an FP16 artifact of this graph carries, with FP32
    arithmetic. The exporter folds BatchNorm into convolutions for some networks, so rounding
    the torch module's own weights would round other numbers than the converters do.
    """
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    tensors = list(m.graph.initializer)
    tensors += [a.t for n in m.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    for t in tensors:
        if t.data_type == onnx.TensorProto.FLOAT:
            arr = numpy_helper.to_array(t).astype(np.float16).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
    onnx.save(m, str(dst))
    return dst


@dataclass
class Exported:
    name: str
    model: nn.Module
    onnx: Path
    size: int
    ref: np.ndarray  # torch logits on the held-out images
    ref_fp16_weights: np.ndarray  # the FP32 graph with FP16-rounded weights, on ONNX Runtime


@pytest.fixture(scope="session")
def images_at(data_spec) -> Callable[[int], tuple]:
    """``images_at(size)`` -> (held-out ImageSet, calibration ImageSet) at that size, cached."""
    from pncd.export.calibration import calibration_images, held_out_images

    cache: dict[int, tuple] = {}

    def get(size: int) -> tuple:
        if size not in cache:
            cache[size] = (held_out_images(data_spec, 8, (size, size)), calibration_images(data_spec, 8, (size, size), None))
        return cache[size]

    return get


def size_for(model: nn.Module) -> int:
    """32, or the network's own stricter size multiple (e.g. 64 for Swin-UNet)."""
    return max(SIZE, int(getattr(model, "size_multiple", 16)))


@pytest.fixture(scope="session")
def exported(tmp_path_factory, images_at) -> Callable[[str], Exported]:
    """``exported(name)``: the network (seeded, BN statistics set) and its FP32 ONNX, cached."""
    from pncd import models
    from pncd.targets.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
    from pncd.export.parity import runner_logits, torch_logits
    from pncd.targets.onnxrt import OnnxRuntimeRunner

    cache: dict[str, Exported] = {}
    root = tmp_path_factory.mktemp("onnx")

    def get(name: str) -> Exported:
        if name not in cache:
            torch.manual_seed(0)
            model = models.create(name)
            size = size_for(model)
            held, calib = images_at(size)
            model = calibrate_batchnorm(model, calib.images)
            path = root / f"{name}.onnx"
            export_onnx(model, path, 1, size, size)
            rounded = onnx_with_fp16_weights(path, root / f"{name}-fp16-weights.onnx")
            with OnnxRuntimeRunner(rounded) as r:
                ref16 = runner_logits(r, INPUT_NAME, OUTPUT_NAME, held.images)
            cache[name] = Exported(name, model, path, size, torch_logits(model, held.images), ref16)
        return cache[name]

    return get


# ---------------------------------------------------------------------------------------------
# Tiny test-only networks, registered for the duration of a test session
# ---------------------------------------------------------------------------------------------


class TinySeg(nn.Module):
    """Two conv stages and a 1x1 head: exports in about a second, learns the phantoms in seconds."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        from pncd.models import Tap

        self.enc1 = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Conv2d(24, num_classes, 1)
        self.taps = {"low": Tap("enc1", 8, 1), "high": Tap("enc2", 16, 2)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.enc1(x)
        b = F.interpolate(self.enc2(a), size=a.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([a, b], dim=1))


@torch.library.custom_op("pncdtest::wobble", mutates_args=())
def _wobble(x: torch.Tensor) -> torch.Tensor:
    """A custom operator with no ONNX translation: what a user's exotic layer looks like."""
    return x * 2


@_wobble.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Wobble(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _wobble(x)


class BadOpSeg(TinySeg):
    """TinySeg whose head calls an operator the ONNX exporter cannot translate."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__(in_channels, num_classes)
        self.head = nn.Sequential(nn.Conv2d(24, num_classes, 1), Wobble())


class TinyMarginSeg(TinySeg):
    """Logits ~1000 apart by less than FP16's resolution there (0.5): FP16 cannot keep the argmax."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = super().forward(x)
        margin = torch.tanh(z[:, 1:] - z[:, :1]) * 0.2
        return torch.cat([torch.full_like(margin, 1000.0), 1000.0 + margin], dim=1)


class Beacon(nn.Module):
    """Appends a constant channel of 1000 to the image: per-tensor INT8 of the tensor that holds
    both has a step of about 4, which erases the image (about unit scale)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x * 0 + 1000.0], dim=1)  # an activation (not a constant) for NNCF too


class TinyFragileSeg(TinySeg):
    """TinySeg whose first block (``enc1``) only works in floating point: its convolution reads the
    image beside a constant 1000 channel (weights on it fixed at 0), so quantizing that one input
    destroys the segmentation while the other blocks quantize harmlessly."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__(in_channels, num_classes)
        conv = nn.Conv2d(in_channels + 1, 8, 3, padding=1)
        mask = torch.ones_like(conv.weight)
        mask[:, in_channels:] = 0
        with torch.no_grad():
            conv.weight.mul_(mask)
        conv.weight.register_hook(lambda g: g * mask)  # the beacon's weights stay 0 through training
        self.enc1 = nn.Sequential(Beacon(), conv, nn.BatchNorm2d(8), nn.ReLU())


TEST_MODELS = {"export_tiny": TinySeg, "export_badop": BadOpSeg, "export_margin": TinyMarginSeg,
               "export_fragile": TinyFragileSeg}


@pytest.fixture(scope="session")
def test_models():
    """Register the tiny networks (role "test") for this session, unregister them afterwards.

    They are registered at run time, after collection, so tests parametrised over
    ``list_models()`` elsewhere never see them. pncd's Registry has no unregister; the test
    removes its own entries from the registry's dicts.
    """
    from pncd import models

    models.list_models()  # import the real architectures first
    for name, cls in TEST_MODELS.items():
        if name not in models.MODELS:
            models.register_model(name, role="test")(lambda in_channels=1, num_classes=2, _c=cls: _c(in_channels, num_classes))
    yield list(TEST_MODELS)
    for name in TEST_MODELS:
        models.MODELS._items.pop(name, None)
        models.MODELS._meta.pop(name, None)


def train_briefly(model: nn.Module, data_spec: dict, steps: int = 60, seed: int = 0) -> nn.Module:
    """A few Adam steps of cross-entropy on the training split: enough for a meaningful Dice."""
    from pncd.data import DataSpec, load_split

    torch.manual_seed(seed)
    ss = load_split(DataSpec.from_dict(data_spec), "train")
    x_all, y_all = torch.from_numpy(ss.images), torch.from_numpy(ss.masks)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    weight = torch.tensor([1.0, 5.0])
    model.train()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (8,), generator=g)
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx], weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def make_run(tmp_path_factory, test_models, data_spec):
    """``make_run(model_name, trained=True, checkpoint=True)`` -> a run directory (cached)."""
    from pncd import models
    from pncd.checkpoint import save_weights, write_run_config

    cache: dict[tuple, Path] = {}

    def make(name: str = "export_tiny", trained: bool = True, checkpoint: bool = True) -> Path:
        key = (name, trained, checkpoint)
        if key not in cache:
            torch.manual_seed(0)
            model = models.create(name)
            if trained:
                train_briefly(model, data_spec)
            run = tmp_path_factory.mktemp("run") / f"{name}{'-trained' if trained else ''}"
            run.mkdir()
            write_run_config(run, model, data_spec, {"fixture": "tests/export"}, kind="train")
            if checkpoint:
                save_weights(model, run / "best.safetensors")
            cache[key] = run
        return cache[key]

    return make
