"""The export's exact graph rewrite: a one-slope PRelu becomes LeakyRelu, bit for bit.

Real files: a small network is exported by the real exporter and run on a real ONNX Runtime
session; the rewritten graph must give the same logits as the PRelu one and torch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from pncd.export.graph_rewrite import PRELU_REWRITE, rewrite_file, scalar_prelu_to_leaky_relu
from pncd.export.onnx_export import export_onnx


class TwoSlopes(nn.Module):
    """One PReLU with a single slope (rewritten) and one per channel (left alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 2, 1)
        self.one, self.per_channel = nn.PReLU(), nn.PReLU(4)
        with torch.no_grad():
            self.one.weight.fill_(0.173)
            self.per_channel.weight.copy_(torch.tensor([0.1, -0.2, 0.3, 0.05]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.per_channel(self.b(self.one(self.a(x)))))


def ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def run(path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 1  # a warning (e.g. an unused initializer left behind) shows in the log
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def test_export_rewrites_only_the_one_slope_prelu(tmp_path):
    torch.manual_seed(0)
    model = TwoSlopes().eval()
    path = tmp_path / "m.onnx"
    opts = export_onnx(model, path, 1, 16, 16)
    assert opts["rewrites"] == {PRELU_REWRITE: 1}
    kinds = ops(path)
    assert kinds.count("LeakyRelu") == 1 and kinds.count("PRelu") == 1
    leaky = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "LeakyRelu")
    assert helper.get_attribute_value(leaky.attribute[0]) == pytest.approx(0.173, abs=1e-7)
    x = np.random.default_rng(0).standard_normal((1, 1, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(path, x), ref, atol=1e-5)


def test_rewritten_graph_is_bit_identical_and_drops_the_slope(tmp_path):
    """A hand-made graph (slope as a Constant node and as an initializer): same outputs, bit
    for bit, and no slope constant left that nothing reads."""
    slope_init = numpy_helper.from_array(np.array([[[[-0.31]]]], dtype=np.float32), "s1")
    const = helper.make_node("Constant", [], ["s2"], value=numpy_helper.from_array(np.array([0.7], dtype=np.float32)))
    nodes = [const, helper.make_node("PRelu", ["image", "s1"], ["h"]), helper.make_node("PRelu", ["h", "s2"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 3, 3])], [slope_init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    before, after = tmp_path / "before.onnx", tmp_path / "after.onnx"
    onnx.save(model, str(before))
    onnx.save(model, str(after))
    assert rewrite_file(after) == {PRELU_REWRITE: 2}
    rewritten = onnx.load(str(after))
    onnx.checker.check_model(rewritten, full_check=True)
    assert [n.op_type for n in rewritten.graph.node] == ["LeakyRelu", "LeakyRelu"]
    assert not rewritten.graph.initializer
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 3)).astype(np.float32)
    assert np.array_equal(run(before, x), run(after, x))


def test_nothing_to_rewrite_leaves_the_file_untouched(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["logits"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 2, 2])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph), str(path))
    stamp = path.stat().st_mtime_ns
    assert rewrite_file(path) == {PRELU_REWRITE: 0}
    assert path.stat().st_mtime_ns == stamp
    assert scalar_prelu_to_leaky_relu(onnx.load(str(path))) == 0
