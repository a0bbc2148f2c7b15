"""One tester for every registered network (``ModelTester``), run over ``list_models()``.

A new architecture file in ``pncd/models`` is picked up here with no test code of its own:
output shape at two sizes and channel counts, backward, parameter count against the declared
reference, taps, safetensors round trip, wrong-architecture error and ONNX parity (real ONNX
Runtime session). Inputs are tiny (64 x 64 / 96 x 64, rounded up to a network's declared
``size_multiple``) to keep the run short on a CPU. The slow-marked test repeats the ONNX check
with the dynamo exporter.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pncd import models
from pncd.checkpoint import load_weights, save_weights
from pncd.errors import PncdError

ALL_MODELS = models.list_models()


def images(n: int, channels: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Noise images with a random gain and offset each, so per-image statistics differ."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, h, w, generator=g)
    gain = 0.5 + 1.5 * torch.rand(n, 1, 1, 1, generator=g)
    return x * gain + (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)


def settle_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set BatchNorm running statistics to those of the batch ``x``, then switch to eval.

    Fresh networks in eval mode use mean 0 / variance 1 and their activations can grow to 1e4
    through deep residual stacks; settled statistics keep outputs at a sane scale, so absolute
    tolerances mean something. (Attention heads normalise pooled features: the images in ``x``
    must differ in their statistics, see ``images``.)
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass gives the batch's statistics
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def perturb_buffers(model: nn.Module) -> nn.Module:
    """Give every floating-point buffer (BatchNorm statistics) values that a fresh network lacks."""
    with torch.no_grad():
        for buf in model.buffers():
            if buf.is_floating_point():
                buf.mul_(0.5).add_(torch.rand_like(buf))
    return model


def sizes(model: nn.Module) -> tuple[tuple[int, int], tuple[int, int]]:
    """A square and a non-square test size (about 64 x 64 and 96 x 64), in multiples of the
    network's ``size_multiple`` (16 unless it declares a stricter one)."""
    m = int(getattr(model, "size_multiple", 16))

    def up(v: int) -> int:
        return -(-v // m) * m

    return (up(64), up(64)), (up(96), up(64))


class ModelTester:
    """Checks every registered network must pass; subclasses provide the ``name`` fixture."""

    def test_output_shape_sizes_channels_classes(self, name: str) -> None:
        torch.manual_seed(0)
        for channels, pick in ((1, 0), (3, 1)):
            model = models.create(name, in_channels=channels, num_classes=3).eval()
            h, w = sizes(model)[pick]
            with torch.no_grad():
                out = model(images(1, channels, h, w))
            assert out.shape == (1, 3, h, w), f"{name} at {channels}ch {h}x{w}"
            assert torch.isfinite(out).all()

    def test_backward_reaches_every_parameter(self, name: str) -> None:
        torch.manual_seed(0)
        model = models.create(name, in_channels=1, num_classes=2).train()
        size = sizes(model)[0]
        x = images(2, 1, *size)
        target = torch.randint(0, 2, (2, *size))
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        assert trainable, f"{name} has no trainable parameters"
        unreached = [n for n, p in trainable if p.grad is None]
        assert not unreached, f"{name}: no gradient for {unreached[:5]}"
        bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
        assert not bad, f"{name}: non-finite gradient in {bad[:5]}"

    def test_parameter_count_matches_reference(self, name: str) -> None:
        ref = models.model_info(name).get("paper_params_m")
        n = models.count_parameters(models.create(name, in_channels=1, num_classes=2))
        assert n > 0
        if ref is None:
            pytest.skip(f"{name} declares no reference parameter count ({n / 1e6:.3f} M)")
        assert abs(n / 1e6 - ref) <= 0.05 * ref, f"{name}: {n / 1e6:.3f} M parameters vs reference {ref} M"

    def test_taps_have_declared_channels_and_stride(self, name: str) -> None:
        model = models.create(name, in_channels=1, num_classes=2).eval()
        assert {"low", "high"} <= set(model.taps), f"{name} must declare low and high taps"
        # low is the stride-2 feature and high the last stride-8 one where the network has them
        # (a Swin encoder starts at stride 4); shapes below are checked against the declaration.
        assert model.taps["high"].stride == 8
        assert model.taps["low"].stride in (2, 4)
        h, w = sizes(model)[1]
        taps = list(model.taps.values())
        with models.FeatureTaps(model, [t.module for t in taps]) as ft, torch.no_grad():
            model(images(1, 1, h, w))
        for key, tap in model.taps.items():
            feat = ft[tap.module]
            assert feat.shape == (1, tap.channels, h // tap.stride, w // tap.stride), (
                f"{name} tap {key} ({tap.module}): got {tuple(feat.shape)}, declared {tap}"
            )

    def test_save_load_round_trip(self, name: str, tmp_path: Path) -> None:
        torch.manual_seed(0)
        a = perturb_buffers(models.create(name, in_channels=1, num_classes=2)).eval()
        path = tmp_path / "w.safetensors"
        save_weights(a, path)
        torch.manual_seed(1)
        b = models.create(name, in_channels=1, num_classes=2).eval()
        sa, sb = a.state_dict(), b.state_dict()
        assert any(not torch.equal(sa[k], sb[k]) for k in sa), "a fresh network should differ before loading"
        load_weights(b, path)
        x = images(1, 1, *sizes(a)[0], seed=1)
        with torch.no_grad():
            assert torch.equal(a(x), b(x))

    def test_loading_another_architecture_is_a_clear_error(self, name: str, tmp_path: Path) -> None:
        other = "enet" if name != "enet" else "dcsaunet"  # small ones: quick to save
        path = tmp_path / f"{other}.safetensors"
        save_weights(models.create(other, in_channels=1, num_classes=2), path)
        with pytest.raises(PncdError, match=other):
            load_weights(models.create(name, in_channels=1, num_classes=2), path)

    def test_onnx_export_matches_torch_in_onnxruntime(self, name: str, tmp_path: Path) -> None:
        """TorchScript exporter (fast) with dynamic batch and size: run at another size than traced."""
        import onnxruntime as ort

        torch.manual_seed(0)
        model = models.create(name, in_channels=1, num_classes=3)
        size, other_size = sizes(model)
        settle_batchnorm(model, images(4, 1, *size))
        path = tmp_path / f"{name}.onnx"
        axes = {0: "batch", 2: "height", 3: "width"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                model, (images(1, 1, *size),), str(path), dynamo=False, opset_version=18,
                input_names=["image"], output_names=["logits"], dynamic_axes={"image": axes, "logits": axes},
            )
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = images(2, 1, *other_size, seed=1)
        with torch.no_grad():
            ref = model(x).numpy()
        out = session.run(["logits"], {"image": x.numpy()})[0]
        assert out.shape == ref.shape
        # 1e-3 absolute for logits of order 1; randomly initialised deep networks (DCSAU-Net's
        # BatchNorm over pooled features above all) reach logits of 10-100 and amplify float32
        # rounding alike in torch and ONNX Runtime, so the bound scales with the logits.
        scale = max(1.0, float(np.abs(ref).max()))
        assert np.abs(out - ref).max() < 1e-3 * scale

    @pytest.mark.slow
    def test_onnx_dynamo_export_matches_torch(self, name: str, tmp_path: Path) -> None:
        """The dynamo exporter (torch's default) also handles every network; 5-30 s each."""
        import onnxruntime as ort

        torch.manual_seed(0)
        model = models.create(name, in_channels=1, num_classes=3)
        size = sizes(model)[0]
        settle_batchnorm(model, images(4, 1, *size))
        path = tmp_path / f"{name}.onnx"
        x = images(1, 1, *size, seed=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=18, external_data=False,
                              input_names=["image"], output_names=["logits"])
        assert not (tmp_path / f"{name}.onnx.data").exists(), "weights must be inside the .onnx file"
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            ref = model(x).numpy()
        out = session.run(["logits"], {"image": x.numpy()})[0]
        scale = max(1.0, float(np.abs(ref).max()))
        assert np.abs(out - ref).max() < 1e-3 * scale


@pytest.fixture(params=ALL_MODELS)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


class TestEveryModel(ModelTester):
    pass


def test_students_and_teachers_registered() -> None:
    assert {"enet", "mobilenetv2", "resnet18"} <= set(models.list_models("student"))
    assert {"dcsaunet", "unet"} <= set(models.list_models("teacher"))
    for n in ALL_MODELS:
        assert models.model_info(n)["role"] in ("student", "teacher"), n
