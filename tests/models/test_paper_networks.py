"""The PNCD paper's other networks (RA-UNet, UNet++, Attention U-Net, PSPNet, FANet, Swin-UNet):
what the shared ``ModelTester`` (test_models_zoo.py) does not cover.

Parameter counts against each module's documentation and the papers, input-size rules
(``size_multiple`` and the PncdError for other sizes), the export-safe pieces written here
(PSPNet's pooling as matrices, Swin-UNet's window attention against torchvision's), FANet's
unrolled feedback, attention gates' start, and local pretrained backbone weights. (Swin-UNet's
shapes, taps and dynamic-size ONNX export at 128 x 64 are the shared tester's, which honours
``size_multiple``.) Inputs are 64 x 64 or 128 x 64.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pncd import models
from pncd.errors import PncdError
from tests.helpers import settle_batchnorm

PAPER_NETWORKS = ["raunet", "unetpp", "attention_unet", "pspnet", "fanet", "swin_unet"]
MODULE_OF = {"raunet": "raunet", "unetpp": "unetpp", "attention_unet": "attention_unet", "pspnet": "pspnet",
             "fanet": "fanet", "swin_unet": "swin_unet"}


def documented_millions(name: str) -> float:
    """The count the module docstring states: "<x> M parameters at 1 input channel and 2 classes"."""
    doc = importlib.import_module(f"pncd.models.{MODULE_OF[name]}").__doc__ or ""
    found = re.search(r"([\d.]+) M parameters at 1 input channel and\s+2 classes", doc.replace("\n", " "))
    assert found, f"pncd.models.{MODULE_OF[name]} must document its parameter count"
    return float(found.group(1))


def bn_settled(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """BatchNorm statistics from one pass over ``x`` (fresh eval networks can blow up), then eval."""
    return settle_batchnorm(model, [x])


@pytest.mark.parametrize("name", PAPER_NETWORKS)
def test_parameter_count_matches_documentation(name: str) -> None:
    n = models.count_parameters(models.create(name, in_channels=1, num_classes=2)) / 1e6
    print(f"{name}: {n:.3f} M parameters")  # shown with -s: the figures the report quotes
    doc = documented_millions(name)
    assert abs(n - doc) <= 0.006 + 0.0005 * doc, f"{name}: {n:.3f} M, documented {doc} M"
    ref = models.model_info(name)["paper_params_m"]
    if name in ("raunet", "unetpp"):  # the PNCD paper's Table 1 gives these two
        assert ref is not None and round(n, 1) == ref, f"{name}: {n:.3f} M vs Table 1's {ref} M"
    else:
        assert ref is None


def test_unetpp_width_32_is_zhou_et_al_network() -> None:
    """Zhou et al.'s Table 1 lists UNet++ at 9.04 M; base=32 (BatchNorm aside) is within 2 %."""
    n = models.count_parameters(models.create("unetpp", base=32)) / 1e6
    bn = sum(m.weight.numel() + m.bias.numel() for m in models.create("unetpp", base=32).modules()
             if isinstance(m, nn.BatchNorm2d)) / 1e6
    assert abs((n - bn) - 9.04) < 0.02 * 9.04


@pytest.mark.parametrize("name", PAPER_NETWORKS)
def test_size_multiple_declared_and_honoured(name: str) -> None:
    model = models.create(name, in_channels=3, num_classes=4).eval()
    m = model.size_multiple
    assert m in (8, 16, 32, 64)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 2 * m if m >= 32 else 64, m if m >= 64 else 64))
    assert out.shape[:2] == (1, 4)


@pytest.mark.parametrize("name,bad", [("raunet", (80, 64)), ("swin_unet", (96, 64)), ("swin_unet", (64, 32))])
def test_invalid_size_is_a_clear_error(name: str, bad: tuple[int, int]) -> None:
    model = models.create(name).eval()
    with pytest.raises(PncdError) as err, torch.no_grad():
        model(torch.randn(1, 1, *bad))
    msg = str(err.value)
    m = model.size_multiple
    assert f"{bad[0]}x{bad[1]}" in msg and f"divisible by {m}" in msg
    assert f"{m}, {2 * m}, {3 * m}" in msg  # names the valid sizes


def test_swin_window_sizes_set_the_size_rule() -> None:
    assert models.create("swin_unet").size_multiple == 64
    uniform = models.create("swin_unet", window_sizes=(8, 8, 8, 8))
    assert uniform.size_multiple == 256
    with pytest.raises(PncdError, match="window_sizes"):
        models.create("swin_unet", window_sizes=(8, 8, 4))


@pytest.mark.parametrize("size", [(5, 7), (8, 8), (12, 8), (60, 60), (3, 2)])
def test_pspnet_matrix_pooling_equals_adaptive_avg_pool(size: tuple[int, int]) -> None:
    from pncd.models.pspnet import BINS, adaptive_avg_pool

    x = torch.randn(2, 3, *size)
    for b in BINS:
        assert torch.allclose(adaptive_avg_pool(x, b), F.adaptive_avg_pool2d(x, b), atol=1e-6), (size, b)


def test_pspnet_any_size() -> None:
    """The pooling needs no divisibility: a 60 x 44 input (7 x 6 feature) gives logits at 60 x 44."""
    model = models.create("pspnet", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 60, 44)).shape == (1, 3, 60, 44)


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_attention_equals_torchvision_where_torchvision_shifts(shift: int) -> None:
    """On a map of several windows our attention is torchvision's shifted_window_attention."""
    from torchvision.models.swin_transformer import shifted_window_attention

    from pncd.models.swin_unet import FixedShiftWindowAttention

    torch.manual_seed(0)
    attn = FixedShiftWindowAttention(32, [4, 4], [shift, shift], 2).eval()
    x = torch.randn(2, 8, 12, 32)
    ref = shifted_window_attention(
        x, attn.qkv.weight, attn.proj.weight, attn.get_relative_position_bias(), [4, 4], 2, [shift, shift],
        qkv_bias=attn.qkv.bias, proj_bias=attn.proj.bias, training=False,
    )
    with torch.no_grad():
        assert torch.allclose(attn(x), ref, atol=1e-5)


def test_swin_shift_on_a_single_window_keeps_regions_apart() -> None:
    """Where the map is one window the shifted block still shifts: a token sees only its region.

    Map 4 x 4, window 4, shift 2: after the cyclic shift the regions are the 2 x 2 quadrants of
    the shifted map, i.e. quadrants of the original map too. Changing the top-left quadrant must
    leave the other quadrants' outputs unchanged, and change its own.
    """
    from pncd.models.swin_unet import FixedShiftWindowAttention

    torch.manual_seed(0)
    attn = FixedShiftWindowAttention(16, [4, 4], [2, 2], 2).eval()
    x = torch.randn(1, 4, 4, 16)
    y = x.clone()
    y[:, :2, :2] += 1.0
    with torch.no_grad():
        a, b = attn(x), attn(y)
    changed = (a - b).abs().amax(dim=-1)[0] > 1e-6
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(changed, expected)


def test_fanet_feedback_is_unrolled_passes() -> None:
    """iterations=2: a pass with an empty mask, then one with its foreground probability."""
    torch.manual_seed(0)
    model = bn_settled(models.create("fanet", num_classes=3, iterations=2), torch.randn(2, 1, 64, 64))
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        first = model.single_pass(x, torch.zeros(2, 1, 64, 64))
        foreground = 1 - first.softmax(dim=1)[:, :1]
        expected = model.single_pass(x, foreground)
        out = model(x)
    assert torch.allclose(out, expected, atol=1e-5)
    assert not torch.allclose(out, first, atol=1e-3)  # the feedback changes the prediction
    model.iterations = 1
    with torch.no_grad():
        assert torch.allclose(model(x), first, atol=1e-5)


def test_fanet_rejects_bad_settings() -> None:
    with pytest.raises(PncdError, match="iterations"):
        models.create("fanet", iterations=0)
    with pytest.raises(PncdError, match="num_classes"):
        models.create("fanet", num_classes=1)


def test_unetpp_returns_only_the_final_prediction() -> None:
    model = models.create("unetpp", base=8, num_classes=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 64, 64)


def test_attention_gates_start_open() -> None:
    """The gates' initial values sit around 0.5 (not saturated shut), at every level."""
    from pncd.models.attention_unet import AttentionGate

    torch.manual_seed(0)
    model = bn_settled(models.create("attention_unet"), torch.randn(2, 1, 64, 64))
    seen = []

    def grab(mod, inp, out):
        seen.append(torch.sigmoid(out))

    handles = [m.psi.register_forward_hook(grab) for m in model.modules() if isinstance(m, AttentionGate)]
    with torch.no_grad():
        model(torch.randn(2, 1, 64, 64))
    for h in handles:
        h.remove()
    assert len(seen) == 4
    for alpha in seen:
        assert 0.1 < alpha.mean().item() < 0.9
        assert (alpha > 0.01).float().mean().item() > 0.5


def test_raunet_loads_local_resnet34_weights(tmp_path: Path) -> None:
    """``pretrained=PATH`` takes a torchvision ResNet-34 state_dict; the RGB stem is averaged."""
    from safetensors.torch import save_file
    from torchvision.models import resnet34

    torch.manual_seed(3)
    state = {k: v.contiguous() for k, v in resnet34(weights=None).state_dict().items()}
    path = tmp_path / "r34.safetensors"
    save_file(state, str(path))
    model = models.create("raunet", in_channels=1, pretrained=str(path))
    enc = model.encoder.state_dict()
    assert torch.equal(enc["layer3.2.conv1.weight"], state["layer3.2.conv1.weight"])
    assert torch.allclose(enc["conv1.weight"], state["conv1.weight"].sum(dim=1, keepdim=True), atol=1e-6)
    with pytest.raises(PncdError, match="not found"):
        models.create("raunet", pretrained=str(tmp_path / "missing.pt"))
