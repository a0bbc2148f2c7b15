"""Keep an ONNX Runtime INT8 (QDQ) graph in 8 bits through data-movement ops.

ONNX Runtime's quantizer quantizes the ops it is asked to (pncd: convolutions, matrix products,
additions) and leaves the rest in float: a tensor leaving a quantized op is dequantized
(``DequantizeLinear``), moved, and quantized again (``QuantizeLinear``) with a scale of its own.
For ops that only move values, that round trip is pure cost. ENet's max-unpooling is one:
``DQ -> Unsqueeze -> Where(mask, ., 0) -> Reshape -> DepthToSpace -> Q -> DQ``, which ran in f32 on
the largest tensors of the decoder (16 x 4 x 128 x 128 at 256x256), 15% of ENet's INT8 time.

:func:`keep_int8_through_moves` rewrites each such chain to move the 8-bit tensor itself:
``Unsqueeze -> Where(mask, ., zero point) -> Reshape -> DepthToSpace -> DQ`` with the first
``DQ``'s scale and zero point. Exact: the moves commute with a per-tensor dequantization, and
``Where``'s other branch, a float 0, is the zero point (asymmetric u8 ranges always hold 0, which
the zero point represents exactly). The second quantization (``Q -> DQ`` with a scale calibrated
on the moved tensor, whose values are those of the first one and 0) is dropped, so its rounding
goes too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# ops whose output holds values of their (first) input, moved: a per-tensor dequantization commutes with them
MOVE_OPS = ("Unsqueeze", "Squeeze", "Reshape", "Flatten", "DepthToSpace", "SpaceToDepth", "Transpose", "Where")
REWRITE = "DQ -> data movement -> Q chains kept in 8 bits (Unsqueeze, Reshape, DepthToSpace, Where with 0, ...)"


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
    return values


def _chain(dq, consumers: dict[str, list[Any]], consts: dict[str, np.ndarray], outputs: set[str]):
    """(the move ops after ``dq`` up to a QuantizeLinear, that QuantizeLinear), or None."""
    chain: list[Any] = []
    tensor = dq.output[0]
    while True:
        users = consumers.get(tensor, [])
        if len(users) != 1 or tensor in outputs:
            return None
        node = users[0]
        if node.op_type == "QuantizeLinear" and chain:
            after = consumers.get(node.output[0], [])
            ok = after and all(n.op_type == "DequantizeLinear" for n in after) and node.output[0] not in outputs
            return (chain, node) if ok else None
        if node.op_type not in MOVE_OPS:
            return None
        if node.op_type == "Where":  # Where(mask, moved tensor, 0)
            zero = consts.get(node.input[2])
            if node.input[1] != tensor or zero is None or zero.dtype.kind != "f" or np.any(zero != 0):
                return None
        elif node.input[0] != tensor or any(i not in consts for i in node.input[1:] if i):
            return None
        chain.append(node)
        tensor = node.output[0]


def keep_int8_through_moves(model) -> int:
    """Rewrite ``model`` (an onnx.ModelProto, in place) as the module docstring says; returns the
    number of chains rewritten. Per-tensor (scalar) scales only."""
    from onnx import numpy_helper

    graph = model.graph
    consts = _constants(graph)
    outputs = {o.name for o in graph.output}
    changed = 0
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        consumers: dict[str, list[Any]] = {}
        for n in graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        scale = consts.get(dq.input[1])
        zp = consts.get(dq.input[2]) if len(dq.input) > 2 else None
        if scale is None or zp is None or scale.size != 1 or zp.size != 1 or zp.dtype != np.uint8:
            continue
        found = _chain(dq, consumers, consts, outputs)
        if found is None:
            continue
        chain, q = found
        chain[0].input[1 if chain[0].op_type == "Where" else 0] = dq.input[0]
        for node in chain:
            if node.op_type == "Where":
                name = f"{node.name or 'where'}_zero_point_u8"
                graph.initializer.append(numpy_helper.from_array(
                    np.full(consts[node.input[2]].shape, zp.reshape(()), np.uint8), name))
                node.input[2] = name
        moved = chain[-1].output[0]
        for dq2 in consumers[q.output[0]]:
            dq2.input[0], dq2.input[1], dq2.input[2] = moved, dq.input[1], dq.input[2]
        graph.node.remove(q)
        graph.node.remove(dq)  # its one reader (chain[0], _chain checked) reads its 8-bit input now
        changed += 1
    if changed:  # the moved tensors are u8 now: drop their recorded (float) types, and what nothing reads
        moved_names = {o for n in graph.node if n.op_type in MOVE_OPS for o in n.output}
        keep = [v for v in graph.value_info if v.name not in moved_names]
        del graph.value_info[:]
        graph.value_info.extend(keep)
        read = {i for n in graph.node for i in n.input} | outputs
        for init in [i for i in graph.initializer if i.name not in read]:
            graph.initializer.remove(init)
    return changed
