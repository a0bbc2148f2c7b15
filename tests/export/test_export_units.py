"""Units of the export stage: TensorRT build plans, the target registry, the checks, helpers."""

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
from pncd.targets.registry import PRECISIONS, TARGETS, check_pair, load_runner, valid_pairs
from pncd.targets.trt import parse_trt_version, trt_build_plan

# --- trt_build_plan: the version logic --------------------------------------------------------


@pytest.mark.parametrize("version", ["10.0.1", "10.3.0.30", "10.11.0"])
def test_weakly_typed_before_10_12(version):
    fp32, fp16, int8 = (trt_build_plan(version, p) for p in PRECISIONS)
    assert not any(p["strongly_typed"] for p in (fp32, fp16, int8))
    assert fp32["builder_flags"] == [] and fp16["builder_flags"] == ["FP16"]
    assert int8["builder_flags"] == ["INT8", "FP16"]  # INT8 from the QDQ nodes, FP16 for the rest
    assert (fp32["onnx"], fp16["onnx"], int8["onnx"]) == ("model.onnx", "model_fp16.onnx", "model_int8.onnx")


@pytest.mark.parametrize("version", ["10.12.0", "10.16.1.4", "11.0.0", "11.2"])
def test_strongly_typed_from_10_12(version):
    for p in PRECISIONS:
        plan = trt_build_plan(version, p)
        assert plan["strongly_typed"] is True and plan["network"] == "strongly typed"
        assert plan["builder_flags"] == []  # precision comes from the ONNX itself
    assert trt_build_plan(version, "int8")["int8_source"].startswith("QDQ")


def test_build_plan_rejects_old_or_bad_versions():
    with pytest.raises(PncdError, match="TensorRT 8.6.1 is too old"):
        trt_build_plan("8.6.1", "fp16")
    with pytest.raises(PncdError, match="not a version number"):
        trt_build_plan("latest", "fp32")
    with pytest.raises(PncdError, match="precision 'int4' is unknown"):
        trt_build_plan("10.3", "int4")
    assert parse_trt_version("10.3.0.30") == (10, 3, 0) and parse_trt_version("11.1") == (11, 1, 0)


# --- registry and helpers ---------------------------------------------------------------------


def test_target_registry_pairs():
    assert list(TARGETS) == ["jetson", "onnxruntime", "openvino", "tensorrt"]
    assert len(valid_pairs()) == 12 and ("openvino", "int8") in valid_pairs()
    assert check_pair("jetson", "fp16").runtime == "tensorrt"
    with pytest.raises(PncdError, match=r"target 'onnxruntime' has no precision 'bf16'; valid target/precision pairs: jetson/fp32"):
        check_pair("onnxruntime", "bf16")


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
    with pytest.raises(PncdError, match="--strict refuses it"):
        parity.check("int8", _result(ratio=0.95), strict=True)
    unknown = parity.check("int8", _result(ratio=None, torch_dice=0.0))
    assert not unknown["passed"] and "not judged" in unknown["warnings"][0]
    with pytest.raises(PncdError, match="not judged"):
        parity.check("int8", _result(ratio=None, torch_dice=0.0), strict=True)


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


# --- runners and load_runner ------------------------------------------------------------------


def test_bare_files_and_runner_metadata(tmp_path):
    from pncd.export.onnx_export import export_onnx
    from pncd.targets.onnxrt import OnnxRuntimeRunner
    from pncd.targets.torch_runner import TorchRunner

    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)).eval()
    model.taps = {}
    export_onnx(model, tmp_path / "m.onnx", 1, 16, 16, dynamic_batch=True)
    r = load_runner(tmp_path / "m.onnx")  # no manifest: chosen by suffix
    assert isinstance(r, OnnxRuntimeRunner)
    assert r.input_metadata() == {"image": {"shape": ["batch", 1, 16, 16], "dtype": "float32"}}  # before activation
    x = np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32)
    with r, TorchRunner(model, threads=1) as t:
        np.testing.assert_allclose(r.infer({"image": x})["logits"], t.infer({"image": x})["logits"], atol=1e-5)
        assert t.settings["runtime"] == "torch" and r.settings["providers"] == ["CPUExecutionProvider"]
    with pytest.raises(PncdError, match="no runner for .txt files"):
        load_runner((tmp_path / "a.txt").write_text("x") and tmp_path / "a.txt")
    with pytest.raises(PncdError, match="not an exported artifact"):
        load_runner(tmp_path / "missing-dir")
    with pytest.raises(PncdError, match="OpenVINO does not run on CUDA"):
        from pncd.targets.openvino_rt import ov_device

        ov_device("cuda")


def test_runner_needs_activation():
    from pncd.targets.onnxrt import OnnxRuntimeRunner

    with pytest.raises(RuntimeError, match="activate"):
        OnnxRuntimeRunner("x.onnx").infer({})
    with pytest.raises(PncdError, match="ONNX file not found"):
        OnnxRuntimeRunner("does-not-exist.onnx").activate()


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


# --- TensorRT itself (only where it is installed) ---------------------------------------------


@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnxruntime(tmp_path):
    """Build an engine from an exported ONNX and compare with ONNX Runtime (needs TensorRT + GPU)."""
    pytest.importorskip("tensorrt", reason="tensorrt is not installed (its wheels need NVIDIA's index and a GPU)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: TensorRT engines need an NVIDIA GPU")
    from pncd.export.onnx_export import export_onnx
    from pncd.targets.onnxrt import OnnxRuntimeRunner
    from pncd.targets.trt import TensorRTRunner, build_engine

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    export_onnx(model, tmp_path / "model.onnx", 1, 32, 32)
    build_engine(tmp_path / "model.onnx", tmp_path / "model.engine", "fp32")
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32)
    with TensorRTRunner(tmp_path / "model.engine") as t, OnnxRuntimeRunner(tmp_path / "model.onnx") as o:
        assert t.input_names() == ["image"]
        np.testing.assert_allclose(t.infer({"image": x})["logits"], o.infer({"image": x})["logits"], atol=1e-3)
