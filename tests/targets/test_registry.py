"""The target registry and load_runner: dispatch by manifest, by runtime and by file suffix."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from pncd.errors import PncdError
from pncd.targets.registry import TARGETS, check_pair, load_runner, valid_pairs


def test_target_registry_pairs():
    assert list(TARGETS) == ["jetson", "onnxruntime", "openvino", "tensorrt"]
    assert len(valid_pairs()) == 12 and ("openvino", "int8") in valid_pairs()
    assert check_pair("jetson", "fp16").runtime == "tensorrt"
    with pytest.raises(PncdError, match=r"target 'onnxruntime' has no precision 'bf16'; valid target/precision pairs: jetson/fp32"):
        check_pair("onnxruntime", "bf16")


# --- runners and load_runner ------------------------------------------------------------------


def test_bare_files_and_runner_metadata(tmp_path):
    from pncd.targets.onnx_export import export_onnx
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




def test_targets_is_importable_from_the_package():
    import pncd.targets

    assert pncd.targets.TARGETS is TARGETS and pncd.targets.load_runner is load_runner
    with pytest.raises(AttributeError):
        pncd.targets.NOPE  # noqa: B018
