"""Error-compensating rounding of NNCF's 7-bit convolution weights (GPTQ-style, after NNCF).

NNCF rounds each weight to its nearest 7-bit level on its own. With 7-bit weights (pncd's
portable default, see :mod:`pncd.targets.openvino_build`) that costs the LGG MobileNetV2 about one
point of Dice kept, where 8-bit weights cost none. This pass keeps NNCF's grid (its per-channel
scales, its activation quantizers, the int8 range) and chooses the integer levels again, layer
by layer in graph order, so that each 1x1 convolution's output on the calibration images is as
close as it can be to the float model's:

- inputs are the *quantized* model's own inputs to the layer (its activation FakeQuantize,
  with every earlier layer already refined), at pixels sampled from the calibration images;
- columns are rounded one at a time and each column's rounding error is pushed onto the columns
  not yet rounded through the inverse of the inputs' second-moment matrix (the OBQ/GPTQ update,
  Frantar et al. 2022), with the bias as a last, unrounded column that takes what is left;
- the bias target is the float model's output (``W_fp x_fp + b_fp``), so the bias also makes up
  for the mean error of the layers before, as NNCF's bias correction did.

Integer levels stay within [-64, 64]: a pair of u8 x s8 products then sums to at most
255 * 128 = 32640 in int16 (no ``vpmaddubsw`` saturation on CPUs without VNNI, as NNCF's own
7-bit weights). Only ordinary 1x1 convolutions with int8 weights are refined (every such layer of
MobileNetV2, ResNet's projections); depthwise layers keep NNCF's 8-bit weights, other kernels
NNCF's rounding.

NNCF's OpenVINO post-training quantization has no such pass (its GPTQ is in ``compress_weights``,
for weight-only compression of MatMuls with float activations), hence this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

LEVEL_MIN, LEVEL_MAX = -64, 64
ROWS_PER_IMAGE = 256
DAMP = 0.01


@dataclass
class Layer:
    name: str
    weights: Any  # the int8 Constant node
    scale: np.ndarray  # (Cout,)
    bias: Any  # the float Constant node of the Add after the conv
    float_weight: np.ndarray  # (Cout, Cin) float64
    float_bias: np.ndarray  # (Cout,)


def _const(node) -> Any | None:
    return node if node.get_type_name() == "Constant" else None


def _bias_node(conv) -> Any | None:
    """The Constant added to ``conv``'s output (OpenVINO's form of a convolution's bias)."""
    targets = list(conv.output(0).get_target_inputs())
    if len(targets) != 1:
        return None
    add = targets[0].get_node()
    if add.get_type_name() != "Add":
        return None
    for value in add.input_values():
        node = value.get_node()
        if node is not conv and _const(node) is not None:
            return node
    return None


def _is_pointwise(conv) -> bool:
    return (list(conv.get_strides()) == [1, 1] and list(conv.get_dilations()) == [1, 1]
            and list(conv.get_pads_begin()) == [0, 0] and list(conv.get_pads_end()) == [0, 0])


def find_layers(qmodel, fmodel) -> list[Layer]:
    """The 1x1 convolutions with int8 weights in ``qmodel`` (NNCF's), in graph order, each with its
    float weights and bias from ``fmodel`` (the model NNCF quantized; ops keep their names)."""
    fconvs = {n.get_friendly_name(): n for n in fmodel.get_ops() if n.get_type_name() == "Convolution"}
    layers = []
    for conv in qmodel.get_ordered_ops():
        if conv.get_type_name() != "Convolution" or not _is_pointwise(conv):
            continue
        mul = conv.input_value(1).get_node()
        if mul.get_type_name() != "Multiply":
            continue
        cvt, scale = mul.input_value(0).get_node(), _const(mul.input_value(1).get_node())
        weights = _const(cvt.input_value(0).get_node()) if cvt.get_type_name() == "Convert" else None
        fconv = fconvs.get(conv.get_friendly_name())
        if weights is None or scale is None or fconv is None or str(weights.get_element_type()) != "<Type: 'int8_t'>":
            continue
        fw = _const(fconv.input_value(1).get_node())
        if fw is None:
            continue
        w = fw.get_data().astype(np.float64)
        if w.ndim != 4 or w.shape[2:] != (1, 1):
            continue
        fbias, qbias = _bias_node(fconv), _bias_node(conv)
        if qbias is None:  # the bias column takes the compensation; without a bias, NNCF's rounding stays
            continue
        cout = w.shape[0]
        layers.append(Layer(
            name=conv.get_friendly_name(), weights=weights,
            scale=np.broadcast_to(scale.get_data().astype(np.float64).reshape(-1), (cout,)).copy(),
            bias=qbias, float_weight=w.reshape(cout, -1),
            float_bias=(fbias.get_data().astype(np.float64).reshape(-1) if fbias is not None else np.zeros(cout)),
        ))
    return layers


def gptq_round(target: np.ndarray, hessian: np.ndarray, scale: np.ndarray, level_range: tuple[int, int] = (LEVEL_MIN, LEVEL_MAX),
               damp: float = DAMP) -> tuple[np.ndarray, np.ndarray]:
    """Integer levels (Cout, Cin) and the bias (Cout,) that make ``levels * scale`` + bias close to
    ``target`` (Cout, Cin + 1: weights, then the bias) under ``hessian`` ((Cin + 1)^2, the
    inputs' second moments with a constant 1 as the last input); the bias column is not rounded."""
    w = np.array(target, dtype=np.float64)
    h = np.array(hessian, dtype=np.float64)
    cin = w.shape[1] - 1
    dead = np.diag(h) <= 0  # inputs that are 0 on every calibration pixel: rounded to nearest, nothing pushed on
    h[dead, dead] = 1.0
    h[np.diag_indices_from(h)] += damp * float(np.mean(np.diag(h)))
    # Upper Cholesky factor of H^-1: row j holds the update that column j's error makes to the rest
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    levels = np.zeros((w.shape[0], cin), dtype=np.int64)
    s = scale.reshape(-1)
    for j in range(cin):
        col = w[:, j]
        q = np.clip(np.round(col / s), *level_range)
        levels[:, j] = q
        err = (col - q * s) / u[j, j]
        w[:, j + 1:] -= np.outer(err, u[j, j + 1:])
    return levels.astype(np.int8), w[:, cin]


def _sample(x: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """(1, C, H, W) -> (len(pick), C) at flat pixel indices ``pick``."""
    return x.reshape(x.shape[1], -1)[:, pick].T.astype(np.float32)


def _inputs(model, names: list[str], images: np.ndarray, picks: dict[str, list[np.ndarray]],
            compile_fn: Callable, means_only: bool = False) -> dict[str, np.ndarray]:
    """Rows of the inputs of convolutions ``names`` in ``model`` at the pixels ``picks[name][i]``
    of each image ``i`` (drawn here, seeded, for a name that has none yet); one compile, one pass.
    ``means_only``: each name's mean row (C,) instead, summed image by image (memory: one row per
    layer, not images x rows)."""
    model = model.clone()
    convs = {n.get_friendly_name(): n for n in model.get_ops() if n.get_friendly_name() in names}
    # convolutions that read one tensor (ENet's branches) share one added output
    sources: dict[tuple[str, int], Any] = {}
    key: dict[str, tuple[str, int]] = {}
    for name in names:
        value = convs[name].input_value(0)
        key[name] = (value.get_node().get_friendly_name(), value.get_index())
        sources.setdefault(key[name], value)
    before = len(model.outputs)
    model.add_outputs(list(sources.values()))
    if len(model.outputs) != before + len(sources):
        raise RuntimeError(f"OpenVINO added {len(model.outputs) - before} outputs for {len(sources)} layer inputs")
    compiled = compile_fn(model)
    by_source = dict(zip(sources, compiled.outputs[-len(sources):]))
    outs = [by_source[key[name]] for name in names]
    rows: dict[str, list[np.ndarray]] = {name: [] for name in names}
    sums: dict[str, np.ndarray] = {}
    count: dict[str, int] = dict.fromkeys(names, 0)
    for i in range(len(images)):
        result = compiled(images[i : i + 1])
        for name, out in zip(names, outs):
            x = result[out]
            if len(picks.setdefault(name, [])) <= i:
                hw = x.shape[2] * x.shape[3]
                rng = np.random.default_rng([i, hw, names.index(name)])
                picks[name].append(np.sort(rng.choice(hw, size=min(ROWS_PER_IMAGE, hw), replace=False)))
            sample = _sample(x, picks[name][i])
            if means_only:
                sums[name] = sums.get(name, 0.0) + sample.astype(np.float64).sum(axis=0)
                count[name] += len(sample)
            else:
                rows[name].append(sample)
    if means_only:
        return {name: sums[name] / count[name] for name in names}
    return {name: np.concatenate(r) for name, r in rows.items()}


def refine(qmodel, fmodel, images: np.ndarray, compile_fn: Callable, level_range: tuple[int, int] = (LEVEL_MIN, LEVEL_MAX),
           progress: bool = True) -> dict[str, Any]:
    """Round ``qmodel``'s 1x1 convolution weights again, in place (see the module docstring).
    ``fmodel``: the float model NNCF quantized; ``images``: calibration images (N, C, H, W);
    ``compile_fn``: an OpenVINO model -> compiled model (f32 inference precision);
    ``level_range``: the integer levels allowed. Returns a record for the manifest."""
    import openvino as ov
    from pncd.console import progress as _progress

    layers = find_layers(qmodel, fmodel)
    picks: dict[str, list[np.ndarray]] = {}
    names = [layer.name for layer in layers]
    # only the float inputs' means are needed (the bias target); the pixels picked serve the quantized passes
    float_means = _inputs(fmodel, names, images, picks, compile_fn, means_only=True) if layers else {}
    changed, total = 0, 0
    for layer in _progress(layers, desc="rounding 1x1 convolutions", unit="layer", disable=not progress):
        xq = _inputs(qmodel, [layer.name], images, picks, compile_fn)[layer.name].astype(np.float64)
        xa = np.concatenate([xq, np.ones((len(xq), 1))], axis=1)
        hessian = xa.T @ xa / len(xa)
        # The float weights, and the bias that matches the float layer's mean output on the float
        # inputs when the weights meet the quantized inputs (the layer is linear: means suffice)
        b0 = (float_means[layer.name] - xq.mean(axis=0)) @ layer.float_weight.T + layer.float_bias
        target = np.concatenate([layer.float_weight, b0[:, None]], axis=1)
        old = layer.weights.get_data().astype(np.int64).reshape(len(layer.scale), -1)
        levels, bias = gptq_round(target, hessian, layer.scale, level_range)
        layer.weights.output(0).replace(ov.op.Constant(levels.reshape(tuple(layer.weights.get_output_shape(0)))).output(0))
        bshape = tuple(layer.bias.get_output_shape(0))
        layer.bias.output(0).replace(ov.op.Constant(bias.astype(np.float32).reshape(bshape)).output(0))
        changed += int(np.count_nonzero(levels.astype(np.int64) != old))
        total += old.size
    return {"method": "error-compensating (GPTQ-style) rounding of the 1x1 convolutions, pncd.targets.openvino_rounding",
            "layers": len(layers), "levels_changed": changed, "weights": total, "level_range": list(level_range),
            "rows_per_image": ROWS_PER_IMAGE, "images": len(images), "damp": DAMP}
