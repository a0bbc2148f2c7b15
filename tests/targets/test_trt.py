"""The tensorrt / jetson targets: build plans per TensorRT version, the engine builder, the runner.

TensorRT cannot be installed here: ``test_build_engine_*`` drive :func:`pncd.targets.trt.build_engine`
with MOCKS of ``tensorrt`` and Polygraphy's loaders (tests/targets/test_jetson_runner.py's
``fake_tensorrt``), which check what pncd asks Polygraphy for, not TensorRT itself;
``test_tensorrt_engine_matches_onnxruntime`` runs the real thing where TensorRT and a GPU exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pncd.errors import PncdError, RunFailed
from pncd.targets.base import PRECISIONS, RunnerOptions
from pncd.targets.trt import JETSON, TENSORRT, build_engine, parse_trt_version, trt_build_plan, trtexec_command

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


def test_trtexec_command_per_network_kind():
    weak, strong = trt_build_plan("10.3", "int8"), trt_build_plan("10.16", "int8")
    assert trtexec_command(weak, "model_int8.onnx") == "trtexec --onnx=model_int8.onnx --saveEngine=model.engine --int8 --fp16"
    cmd = trtexec_command(strong, "model_int8.onnx", dynamic_shape=(1, 32, 32), max_batch=4)
    assert "--stronglyTyped" in cmd and "--maxShapes=image:4x1x32x32" in cmd and "--int8" not in cmd


# --- the engine builder, on mocks (see the module docstring) ---------------------------------


@pytest.fixture
def mocked_trt(monkeypatch):
    """MOCKED tensorrt 10.3 and Polygraphy loaders, returned by require() of pncd.targets.trt and trt_export."""
    from tests.targets.test_jetson_runner import fake_tensorrt

    import contextlib
    import types

    trt, poly, log = fake_tensorrt("10.3.0")
    logger = types.SimpleNamespace(WARNING=30, verbosity=lambda severity: contextlib.nullcontext())
    fakes = {"tensorrt": trt, "polygraphy.backend.trt": poly, "polygraphy.logger": types.SimpleNamespace(G_LOGGER=logger)}
    fake = lambda module, *a, **k: fakes[module]  # noqa: E731
    monkeypatch.setattr("pncd.targets.trt.require", fake)  # the runner's import
    monkeypatch.setattr("pncd.targets.trt_export.require", fake)  # the engine builder's
    return trt, poly, log


def test_build_engine_writes_the_engine_with_the_plan_and_workspace(mocked_trt, tiny_onnx, tmp_path):
    trt, poly, log = mocked_trt
    data = build_engine(tiny_onnx, tmp_path / "model.engine", "fp16", workspace_mb=64, max_batch=3)
    assert (tmp_path / "model.engine").read_bytes() == data and data.startswith(b"ENGINE")
    assert log["networks"] == [{"strongly_typed": False}] and log["configs"][0]["fp16"] is True
    assert log["configs"][0]["profiles"] == [{"input": ((1, 1, 32, 32), (1, 1, 32, 32), (3, 1, 32, 32))}]
    assert not list(tmp_path.glob("*.tmp*"))


def test_build_engine_failure_is_one_line(mocked_trt, tiny_onnx, tmp_path):
    trt, poly, log = mocked_trt

    def failing(network, config=None):
        def build():
            raise RuntimeError("Invalid Engine. Please ensure the engine was built correctly\nmore log")

        return build

    poly.EngineBytesFromNetwork = failing
    with pytest.raises(RunFailed, match=r"could not build a fp32 engine \(Invalid Engine") as e:
        build_engine(tiny_onnx, tmp_path / "model.engine", "fp32")
    assert "\n" not in str(e.value) and not (tmp_path / "model.engine").exists()


def test_runner_needs_a_gpu_and_builds_without_a_matching_engine(mocked_trt, tiny_onnx, tmp_path):
    man = {"target": "jetson", "precision": "fp32", "tensorrt": {"engine": None}}
    opts = RunnerOptions(precision="fp32", manifest=man, directory=tmp_path)
    with pytest.raises(PncdError, match="is a jetson artifact: TensorRT runs on an NVIDIA GPU"):
        JETSON.runner(Path(tiny_onnx), "cpu", opts)
    r = TENSORRT.runner(Path(tiny_onnx), "cuda", opts)  # no engine in the directory: one built in memory
    assert r._bytes.startswith(b"ENGINE") and mocked_trt[2]["builds"] == 1
    assert TENSORRT.runner(tmp_path / "x.engine", "cpu", RunnerOptions()).path == tmp_path / "x.engine"  # a bare engine


# --- TensorRT itself (only where it is installed) ---------------------------------------------


@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnxruntime(tmp_path):
    """Build an engine from an exported ONNX and compare with ONNX Runtime (needs TensorRT + GPU)."""
    pytest.importorskip("tensorrt", reason="tensorrt is not installed (its wheels need NVIDIA's index and a GPU)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: TensorRT engines need an NVIDIA GPU")
    from pncd.targets.onnx_export import export_onnx
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
