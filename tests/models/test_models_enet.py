"""ENet specifics: the export-friendly pooling / unpooling equals torch's max_pool2d +
max_unpool2d, ties included, and survives ONNX export in FP32 and FP16."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pncd import models
from pncd.errors import PncdError
from pncd.models.enet import pool_with_mask, unpool_with_mask


def _reference(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    return pooled, F.max_unpool2d(y, indices, 2, output_size=x.shape[-2:])


def test_pool_and_unpool_equal_torch_on_random_values() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, 12)  # (B, C, H, W): pooled to 4 x 6
    y = torch.randn(2, 5, 4, 6)
    pooled, mask = pool_with_mask(x)
    ref_pooled, ref_unpooled = _reference(x, y)
    assert torch.equal(pooled, ref_pooled)
    got = unpool_with_mask(y, mask)
    assert got.shape == x.shape
    assert torch.equal(got, ref_unpooled)


def test_ties_go_to_the_first_position_like_torch() -> None:
    """Flat regions (MRI background) give 2x2 windows of equal values: one position only."""
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 1.0  # window (0, 0): tie between (0, 1) and (1, 0)
    x[0, 0, 2:, 2:] = 3.0  # window (1, 1): four-way tie
    y = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]])
    got = unpool_with_mask(y, pool_with_mask(x)[1])
    expected = torch.tensor([[[[0.0, 10.0, 20.0, 0.0],  # window (0, 1) all zero: first = (0, 2)
                               [0.0, 0.0, 0.0, 0.0],
                               [30.0, 0.0, 40.0, 0.0],  # window (1, 0) all zero: first = (2, 0)
                               [0.0, 0.0, 0.0, 0.0]]]])
    assert torch.equal(got, expected)
    assert torch.equal(got, _reference(x, y)[1])


def test_initial_block_rejects_too_many_channels() -> None:
    with pytest.raises(PncdError, match="input channels"):
        models.create("enet", in_channels=16, num_classes=2)


def test_onnx_graph_has_no_unpool_and_runs_in_fp16(tmp_path: Path) -> None:
    """No MaxUnpool node (TensorRT lacks it); the FP16 conversion the export stage uses runs in
    ONNX Runtime and stays close to torch (a MaxPool-based mask broke here in FP16)."""
    import onnx
    import onnxruntime as ort
    from onnxconverter_common import float16

    torch.manual_seed(0)
    model = models.create("enet", in_channels=1, num_classes=2)
    model.train()
    with torch.no_grad():  # realistic BatchNorm statistics, so FP16 has sane magnitudes
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        model(torch.randn(4, 1, 64, 64))
    model.eval()
    path, path16 = tmp_path / "enet.onnx", tmp_path / "enet16.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 1, 64, 64),), str(path), dynamo=False, opset_version=18,
                          input_names=["image"], output_names=["logits"])
        graph = onnx.load(str(path))
        onnx.save(float16.convert_float_to_float16(graph, keep_io_types=True), str(path16))
    assert "MaxUnpool" not in {n.op_type for n in graph.graph.node}
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        ref = model(x).numpy()
    out = ort.InferenceSession(str(path16), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    # FP16 rounding moves some near-tied window maxima, so a few unpooled values land one pixel
    # off: about 1 % mean relative error here. The broken mask (all False) gave about 50 %.
    rel = np.abs(out - ref).mean() / np.abs(ref).mean()
    assert rel < 0.05, f"FP16 mean relative error {rel:.4f}"
