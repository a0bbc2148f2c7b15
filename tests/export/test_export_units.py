"""Units of the export stage: the checks, calibration helpers, FP16 conversion, lazy imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from pncd.errors import PncdError
from pncd.export import parity
from pncd.export.calibration import evenly_spaced, parse_size

# --- helpers and checks ---------------------------------------------------------------------


def test_evenly_spaced_and_parse_size():
    assert evenly_spaced(10, 3).tolist() == [0, 4, 9]  # linspace 0, 4.5, 9 rounded half to even
    assert evenly_spaced(4, 128).tolist() == [0, 1, 2, 3]
    assert evenly_spaced(0, 5).tolist() == []
    idx = evenly_spaced(1000, 128)
    assert len(idx) == 128 and idx[0] == 0 and idx[-1] == 999 and (np.diff(idx) > 0).all()
    assert parse_size("256x192") == (256, 192) and parse_size("64") == (64, 64) and parse_size(None) is None
    with pytest.raises(PncdError):
        parse_size("0x64")


# --- the export-time checks -------------------------------------------------------------------


def _result(agreement=1.0, ratio=1.0, torch_dice=0.8, finite=True):
    return {"finite": finite, "argmax_agreement": agreement, "max_abs_logit_diff": 0.1, "dice_ratio": ratio,
            "dice_gt_torch": torch_dice, "dice_gt_export": None if ratio is None else ratio * torch_dice}


def test_fp32_and_fp16_agreement_limits():
    assert parity.check("fp32", _result(0.9999))["passed"]
    with pytest.raises(PncdError, match=r"\(fp32\) agrees with torch on 99.9800% of pixels, below the required 99.99%"):
        parity.check("fp32", _result(0.9998))
    assert parity.check("fp16", _result(0.999))["passed"]
    with pytest.raises(PncdError, match="below the required 99.90%"):
        parity.check("fp16", _result(0.9989))
    with pytest.raises(PncdError, match="NaN or infinite"):
        parity.check("fp16", _result(finite=False))


def test_int8_warns_below_99_percent_and_strict_fails():
    ok = parity.check("int8", _result(ratio=0.995))
    assert ok["passed"] and ok["warnings"] == []
    low = parity.check("int8", _result(ratio=0.95))
    assert not low["passed"] and "keeps 95.00% of the FP32 Dice" in low["warnings"][0]
    with pytest.raises(PncdError, match="below 99%; nothing was written.*--no-strict"):
        parity.check("int8", _result(ratio=0.95), strict=True)
    unknown = parity.check("int8", _result(ratio=None, torch_dice=0.0))
    assert not unknown["passed"] and "not judged" in unknown["warnings"][0]
    # strict (the export's default) fails a measured loss only: an accuracy that cannot be judged
    # (torch FP32 Dice 0 on the held-out images) stays a warning, and the manifest's check says failed
    unjudged = parity.check("int8", _result(ratio=None, torch_dice=0.0), strict=True)
    assert not unjudged["passed"] and "not judged" in unjudged["warnings"][0]


def test_compare_counts_pixels_and_dice():
    """Hand-made logits: 2 images of 2x2, one pixel of image 1 flips from class 1 to class 0."""
    ref = np.zeros((2, 2, 2, 2), np.float32)
    ref[:, 1, 0, 0] = 1.0  # class 1 at pixel (0, 0) of both images
    out = ref.copy()
    out[1, 1, 0, 0] = -1.0  # image 1 loses it
    masks = np.zeros((2, 2, 2), np.int64)
    masks[:, 0, 0] = 1
    res = parity.compare(ref, out, masks, ["a", "b"], 2)
    assert res["argmax_agreement"] == pytest.approx(7 / 8)
    assert res["max_abs_logit_diff"] == pytest.approx(2.0)
    assert res["dice_gt_torch"] == pytest.approx(1.0)
    assert res["dice_gt_export"] == pytest.approx(0.5)  # case a: 1, case b: 0
    assert res["dice_ratio"] == pytest.approx(0.5) and res["dice_vs_torch"] == pytest.approx(0.5)


# --- FP16 conversion of a graph the converter gets wrong --------------------------------------


class ZerosAndScatter(nn.Module):
    """``new_zeros`` + index_put (ConstantOfShape in ONNX) and a bool -> float cast."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        z = y.new_zeros(y.shape)
        z[:, :, ::2] = y[:, :, ::2]
        return z + (y > 0).to(y.dtype)


def test_fp16_conversion_repairs_cast_and_constant_types(tmp_path):
    """The converter alone makes a graph ONNX Runtime refuses; ``to_fp16`` makes a correct one."""
    import onnx
    import onnxruntime as ort
    from onnxconverter_common import float16

    from pncd.export.onnx_export import export_onnx
    from pncd.export.ort_export import to_fp16

    torch.manual_seed(0)
    model = ZerosAndScatter().eval()
    export_onnx(model, tmp_path / "m.onnx", 1, 16, 16)
    raw = float16.convert_float_to_float16(onnx.load(str(tmp_path / "m.onnx")), keep_io_types=True)
    with pytest.raises(Exception, match="does not match expected type"):
        ort.InferenceSession(raw.SerializeToString(), providers=["CPUExecutionProvider"])

    rec = to_fp16(tmp_path / "m.onnx", tmp_path / "m16.onnx")
    assert rec["repaired_nodes"] >= 1
    x = torch.randn(1, 1, 16, 16)
    sess = ort.InferenceSession(str(tmp_path / "m16.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-2)


def test_import_leaves_optional_backends_alone():
    """Importing the export stage and the registry must not import OpenVINO, NNCF or TensorRT."""
    code = (
        "import sys\n"
        "import pncd.export.cli, pncd.export.pipeline, pncd.targets.registry, pncd.targets.trt\n"
        "from pncd.cli import main\n"
        "heavy = [m for m in ('openvino', 'nncf', 'tensorrt', 'polygraphy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "sys.modules['openvino'] = None; sys.modules['tensorrt'] = None; sys.modules['nncf'] = None\n"
        "main(['export', '--help'])\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "Examples:" in p.stdout and "pncd export runs/enet-pncd --target openvino" in p.stdout
