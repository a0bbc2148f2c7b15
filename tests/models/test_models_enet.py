"""ENet specifics: the export-friendly unpooling equals torch's max_unpool2d, ties included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pncd import models
from pncd.errors import PncdError
from pncd.models.enet import first_max_mask, unpool_with_mask


def _reference_unpool(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    return F.max_unpool2d(y, indices, 2, output_size=x.shape[-2:])


def test_mask_unpool_equals_max_unpool_on_random_values() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, 12)  # (B, C, H, W): pooled to 4 x 6
    y = torch.randn(2, 5, 4, 6)
    got = unpool_with_mask(y, first_max_mask(x, F.max_pool2d(x, 2)))
    assert got.shape == x.shape
    assert torch.equal(got, _reference_unpool(x, y))


def test_ties_go_to_the_first_position_like_torch() -> None:
    """Flat regions (MRI background) give 2x2 windows of equal values: one position only."""
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 1.0  # window (0, 0): tie between (0, 1) and (1, 0)
    x[0, 0, 2:, 2:] = 3.0  # window (1, 1): four-way tie
    y = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]])
    got = unpool_with_mask(y, first_max_mask(x, F.max_pool2d(x, 2)))
    expected = torch.tensor([[[[0.0, 10.0, 20.0, 0.0],  # window (0, 1) all zero: first = (0, 2)
                               [0.0, 0.0, 0.0, 0.0],
                               [30.0, 0.0, 40.0, 0.0],  # window (1, 0) all zero: first = (2, 0)
                               [0.0, 0.0, 0.0, 0.0]]]])
    assert torch.equal(got, expected)
    assert torch.equal(got, _reference_unpool(x, y))
    assert int((got != 0).sum()) == 4  # one position per window, never spread over ties


def test_initial_block_rejects_too_many_channels() -> None:
    with pytest.raises(PncdError, match="input channels"):
        models.create("enet", in_channels=16, num_classes=2)


def test_exported_graph_has_no_maxunpool(tmp_path) -> None:
    """The point of the mask: no MaxUnpool node, which TensorRT and others lack."""
    import warnings

    import onnx

    model = models.create("enet", in_channels=1, num_classes=2).eval()
    path = tmp_path / "enet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 1, 32, 32),), str(path), dynamo=False, opset_version=18)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "MaxUnpool" not in ops
    assert "DepthToSpace" in ops  # the unpooling's interleave
