"""The export's exact graph rewrites: a one-slope PRelu becomes LeakyRelu, bit for bit; each QDQ
node gets its own scale and zero point.

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

from pncd.targets.graph_rewrite import PRELU_REWRITE, QDQ_OPS, QDQ_REWRITE, rewrite_file, scalar_prelu_to_leaky_relu
from pncd.targets.onnx_export import export_onnx


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


def run(path, x: np.ndarray, int32_sums: bool = False) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 1  # a warning (e.g. an unused initializer left behind) shows in the log
    if int32_sums:  # as pncd runs TensorRT's INT8 ONNX on a CPU (targets/onnxrt.py)
        so.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def test_export_rewrites_only_the_one_slope_prelu(tmp_path):
    torch.manual_seed(0)
    model = TwoSlopes().eval()
    path = tmp_path / "m.onnx"
    opts = export_onnx(model, path, 1, 16, 16)
    assert opts["rewrites"] == {PRELU_REWRITE: 1, QDQ_REWRITE: 0}
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
    assert rewrite_file(after) == {PRELU_REWRITE: 2, QDQ_REWRITE: 0}
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
    assert rewrite_file(path) == {PRELU_REWRITE: 0, QDQ_REWRITE: 0}
    assert path.stat().st_mtime_ns == stamp
    assert scalar_prelu_to_leaky_relu(onnx.load(str(path))) == 0


def shared_qdq_model():
    """image -> Q/DQ -> Conv(w1 via Q/DQ) -> Relu -> Q/DQ -> Conv(w2 via Q/DQ): the activation
    scale and the weights' zero point are one initializer read through Identity nodes, the weights'
    scale one Constant read by four nodes: the form torch's exporter gives NNCF's QAT graphs."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(np.array(0.02, np.float32), "act_scale"),
            numpy_helper.from_array(np.array(0, np.uint8), "act_zp"),
            numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
            numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.standard_normal((2, 4, 3, 3)).astype(np.float32), "w2")]
    n = helper.make_node
    nodes = [n("Constant", [], ["w_scale"], value=numpy_helper.from_array(np.array(0.01, np.float32))),
             n("Identity", ["act_scale"], ["s_a"]), n("Identity", ["act_scale"], ["s_b"]), n("Identity", ["w_zp"], ["z_w"]),
             n("QuantizeLinear", ["image", "s_a", "act_zp"], ["xq"]), n("DequantizeLinear", ["xq", "s_a", "act_zp"], ["xd"]),
             n("QuantizeLinear", ["w1", "w_scale", "z_w"], ["w1q"]), n("DequantizeLinear", ["w1q", "w_scale", "z_w"], ["w1d"]),
             n("Conv", ["xd", "w1d"], ["h"], pads=[1, 1, 1, 1]), n("Relu", ["h"], ["r"]),
             n("QuantizeLinear", ["r", "s_b", "act_zp"], ["rq"]), n("DequantizeLinear", ["rq", "s_b", "act_zp"], ["rd"]),
             n("QuantizeLinear", ["w2", "w_scale", "w_zp"], ["w2q"]), n("DequantizeLinear", ["w2q", "w_scale", "w_zp"], ["w2d"]),
             n("Conv", ["rd", "w2d"], ["logits"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 8, 8])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_qdq_nodes_get_their_own_parameters_and_load_with_int32_sums(tmp_path):
    """onnxruntime 1.32 with session.x64quantprecision refused the shared form ("Attempt to replace
    the existing tensor"), so a QAT MobileNetV2's TensorRT export failed its parity check. After the
    rewrite: every Q/DQ scale and zero point is an initializer read by that node alone, no Identity
    or Constant is left over, the logits are bit-identical, and the int32-sum session loads it."""
    before, after = tmp_path / "before.onnx", tmp_path / "after.onnx"
    onnx.save(shared_qdq_model(), str(before))
    onnx.save(shared_qdq_model(), str(after))
    assert rewrite_file(after) == {PRELU_REWRITE: 0, QDQ_REWRITE: 16}  # 8 Q/DQ nodes x (scale, zero point)
    model = onnx.load(str(after))
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    assert [n.op_type for n in graph.node if n.op_type not in QDQ_OPS] == ["Conv", "Relu", "Conv"]
    params = [name for n in graph.node if n.op_type in QDQ_OPS for name in n.input[1:]]
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    assert len(params) == len(set(params)) == 16 and set(params) <= set(inits)
    assert set(inits) == set(params) | {"w1", "w2"}  # the shared originals are gone
    x = np.random.default_rng(1).random((1, 1, 8, 8), dtype=np.float32)
    ref = run(before, x)
    assert np.array_equal(run(after, x), ref)
    np.testing.assert_allclose(run(after, x, int32_sums=True), ref, atol=1e-5)  # loads and computes the same
    assert rewrite_file(after) == {PRELU_REWRITE: 0, QDQ_REWRITE: 0}  # nothing left to do
