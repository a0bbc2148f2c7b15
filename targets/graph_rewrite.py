"""Exact ONNX graph rewrites applied to every export, before any runtime sees the file.

The first: a ``PRelu`` whose slope is a single constant (ENet's ``nn.PReLU()``, one
slope per layer) becomes ``LeakyRelu(alpha=slope)``. The two are the same function
(``x if x >= 0 else slope * x``), computed in the same float32 (the attribute holds the slope's
float32 value, so the outputs are bit-identical). Why: ONNX Runtime's CPU ``PRelu`` takes the
general broadcasting path, which was 35-37% of ENet's whole inference time at 128x128
(FP32 and INT8 alike, one thread), while ``LeakyRelu`` is a plain element-wise kernel that its
graph optimizer can also fuse into the preceding convolution and that its QDQ quantizer knows.
OpenVINO and TensorRT read both ops natively. A per-channel ``PRelu`` is left as it is.

A second one touches only QDQ graphs (a ``pncd qat`` run's ONNX, written by NNCF through torch's
exporter): each ``QuantizeLinear``/``DequantizeLinear`` gets its own scale and zero-point
initializers, where the exporter had one initializer read by many nodes, often through
``Identity`` or ``Constant`` nodes. The values are the same, so the outputs are identical. Why:
ONNX Runtime with ``session.x64quantprecision`` (how pncd runs TensorRT's INT8 ONNX on a CPU, with
TensorRT's int32 sums; ``targets/onnxrt.py``) could not load a QAT MobileNetV2's graph in that
form (onnxruntime 1.32: "AddInitializedOrtValue Attempt to replace the existing tensor" while it
converts s8 weights to u8), so ``pncd export --target tensorrt`` of that QAT run failed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PRELU_REWRITE = "PRelu with one constant slope -> LeakyRelu"
QDQ_REWRITE = "QDQ scale/zero point shared or behind Identity/Constant -> the node's own initializer"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def scalar_prelu_to_leaky_relu(model) -> int:
    """Rewrite ``model`` (an onnx.ModelProto, in place); returns how many nodes changed.

    Slope constants (initializers or ``Constant`` nodes) that nothing reads any more are
    dropped, so runtimes do not warn about unused initializers."""
    from onnx import helper

    graph = model.graph
    consts = _constants(graph)
    changed = 0
    for i, node in enumerate(list(graph.node)):
        slope = consts.get(node.input[1]) if node.op_type == "PRelu" and len(node.input) == 2 else None
        if slope is None or slope.size != 1 or slope.dtype != np.float32:
            continue
        alpha = float(slope.reshape(()))
        leaky = helper.make_node("LeakyRelu", [node.input[0]], list(node.output), name=node.name or None, alpha=alpha)
        graph.node.remove(node)
        graph.node.insert(i, leaky)
        changed += 1
    if changed:
        _drop_unread(graph)
    return changed


def own_qdq_parameters(model) -> int:
    """Give every QuantizeLinear/DequantizeLinear node its own scale and zero-point initializers
    (``model`` changed in place); returns how many inputs were rewired. An input is rewired when its
    value is shared with another node, or comes from a ``Constant`` node or from an ``Identity`` of
    an initializer or constant; anything else (a value computed at run time) is left alone."""
    from onnx import numpy_helper

    graph = model.graph
    consts = _constants(graph)
    identity_of = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in consts}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    initializers = {i.name for i in graph.initializer}
    taken = initializers | {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    changed = 0
    for k, node in enumerate(graph.node):
        if node.op_type not in QDQ_OPS:
            continue
        for j in range(1, len(node.input)):
            name = node.input[j]
            source = identity_of.get(name, name)
            if source not in consts or (name == source and name in initializers and readers[name] == 1):
                continue
            own = f"{node.name or f'qdq{k}'}.{('scale', 'zero_point')[j - 1]}"
            while own in taken:
                own += "_"
            taken.add(own)
            graph.initializer.append(numpy_helper.from_array(consts[source], own))
            node.input[j] = own
            changed += 1
    if changed:
        _drop_unread(graph)
    return changed


def _drop_unread(graph) -> None:
    """Drop initializers, Constant and Identity nodes nothing reads (repeated: an Identity dropped
    may leave its source unread)."""
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        unread_inits = [i for i in graph.initializer if i.name not in read]
        unread_nodes = [n for n in graph.node if n.op_type in ("Constant", "Identity") and n.output[0] not in read]
        if not unread_inits and not unread_nodes:
            return
        for init in unread_inits:
            graph.initializer.remove(init)
        for node in unread_nodes:
            graph.node.remove(node)


def rewrite_file(path: str | Path) -> dict[str, int]:
    """Apply every rewrite to the ONNX file at ``path`` (rewritten in place only when something
    changed); returns {rewrite: count} for the manifest."""
    import onnx

    from pncd.io import atomic_path

    model = onnx.load(str(path))
    counts = {PRELU_REWRITE: scalar_prelu_to_leaky_relu(model), QDQ_REWRITE: own_qdq_parameters(model)}
    if any(counts.values()):
        with atomic_path(path) as tmp:
            onnx.save(model, str(tmp))
    return counts
