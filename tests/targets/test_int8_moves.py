"""ONNX Runtime INT8 kept in 8 bits through data movement: ENet's max-unpooling chain
(DQ -> Unsqueeze -> Where(mask, ., 0) -> Reshape -> DepthToSpace -> Q -> DQ) run on the u8 tensor,
checked on real ONNX Runtime sessions against the float computation."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _unpool_graph(zero_point: int = 37):
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    scale, s2 = np.float32(0.05), np.float32(0.0625)
    inits = [numpy_helper.from_array(np.array(scale), "s"), numpy_helper.from_array(np.array(zero_point, np.uint8), "z"),
             numpy_helper.from_array(np.array(s2), "s2"), numpy_helper.from_array(np.array(zero_point, np.uint8), "z2"),
             numpy_helper.from_array(np.array([2], np.int64), "axis"), numpy_helper.from_array(np.array(0, np.float32), "zeros"),
             numpy_helper.from_array(np.array([1, 16, 4, 4], np.int64), "shape")]
    nodes = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
             helper.make_node("Unsqueeze", ["y", "axis"], ["u"], name="unsqueeze"),
             helper.make_node("Where", ["mask", "u", "zeros"], ["w"], name="where"),
             helper.make_node("Reshape", ["w", "shape"], ["r"], name="reshape"),
             helper.make_node("DepthToSpace", ["r"], ["d"], name="d2s", blocksize=2),
             helper.make_node("QuantizeLinear", ["d", "s2", "z2"], ["dq_in"], name="q2"),
             helper.make_node("DequantizeLinear", ["dq_in", "s2", "z2"], ["out"], name="dq2")]
    g = helper.make_graph(nodes, "unpool", [helper.make_tensor_value_info("q", T.UINT8, [1, 4, 4, 4]),
                                            helper.make_tensor_value_info("mask", T.BOOL, [1, 4, 4, 4, 4])],
                          [helper.make_tensor_value_info("out", T.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _run(model, feed):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_unpool_chain_runs_on_the_8bit_tensor_and_equals_the_float_computation():
    from pncd.targets.int8_moves import keep_int8_through_moves

    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (1, 4, 4, 4), dtype=np.uint8)
    mask = rng.random((1, 4, 4, 4, 4)) < 0.25
    model = _unpool_graph()
    before = _run(model, {"q": q, "mask": mask})
    assert keep_int8_through_moves(model) == 1
    kinds = [n.op_type for n in model.graph.node]
    assert kinds == ["Unsqueeze", "Where", "Reshape", "DepthToSpace", "DequantizeLinear"], kinds
    onnx.checker.check_model(model)
    after = _run(model, {"q": q, "mask": mask})
    # the float computation: the same graph without the second quantization
    floating = _unpool_graph()
    for name in ("q2", "dq2"):
        floating.graph.node.remove(next(n for n in floating.graph.node if n.name == name))
    next(n for n in floating.graph.node if n.name == "d2s").output[0] = "out"
    exact = _run(floating, {"q": q, "mask": mask})
    assert np.array_equal(after, exact)  # the moves are exact: 0 is the zero point
    assert (exact == 0).mean() > 0.5 and (exact != 0).any()
    assert np.abs(before - exact).max() <= 0.0625 / 2 + 1e-6  # the dropped requantization only rounded
    assert not any(i.name in ("zeros", "s2", "z2") for i in model.graph.initializer)  # nothing left unread


def test_a_chain_that_is_not_pure_movement_is_left_alone():
    from onnx import helper

    from pncd.targets.int8_moves import keep_int8_through_moves

    model = _unpool_graph()
    where = next(n for n in model.graph.node if n.op_type == "Where")
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1.0, np.float32), "ones"))
    where.input[2] = "ones"  # Where(mask, x, 1.0): 1.0 is no zero point
    assert keep_int8_through_moves(model) == 0
    model = _unpool_graph()
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    model.graph.node.insert(list(model.graph.node).index(reshape) + 1,
                            helper.make_node("Relu", ["r"], ["r_relu"], name="relu"))
    next(n for n in model.graph.node if n.op_type == "DepthToSpace").input[0] = "r_relu"
    assert keep_int8_through_moves(model) == 0  # Relu computes: the chain stops there
