"""ONNX-level conversions shared by the ONNX Runtime and TensorRT targets: FP16 and INT8 QDQ.

- FP16: ``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)``: the
  graph computes in FP16, the input and output stay FP32 (casts at the edges), so callers feed
  the same arrays to every precision. onnxconverter-common 1.16 turns the output types of
  ``Cast(to=FLOAT)`` and ``ConstantOfShape`` nodes to FP16 but not their ``to`` / ``value``
  attributes (an invalid graph for the dynamo exporter's ``Cast(bool -> float)`` and
  ``new_zeros`` patterns); :func:`_repair_fp16_types` makes the attributes agree. (Putting
  ``Cast`` in the converter's block list instead makes it loop forever: it blocks the casts it
  inserts.)
- INT8: ``quant_pre_process`` (shape inference, graph optimisation) then ``quantize_static`` in
  QDQ format, per-channel weights, calibrated on real training images. For ONNX Runtime on CPU
  the activations are asymmetric QUInt8 and weights QInt8 (its fastest CPU kernels); for
  TensorRT both are symmetric QInt8 (``ActivationSymmetric``/``WeightSymmetric``), the only
  INT8 TensorRT takes from QDQ, with float biases and float weights behind Q/DQ pairs (see
  ``TENSORRT_EXTRA_OPTIONS``).
- CPU portability (ONNX Runtime flavour): ``reduce_range=True`` by default, weights in 7 bits.
  Without VNNI (AVX2, AVX-512 before Cascade Lake / Zen 4) ONNX Runtime's u8 x s8 kernels add
  pairs of products in int16 (``vpmaddubsw``), which saturates: 2 x 255 x 127 > 32767 (measured
  on an AVX2-only EPYC: 33% of the FP32 Dice kept). With 7-bit weights 2 x 255 x 63 fits, and
  VNNI CPUs compute the same sums exactly. ``reduce_range=False`` (``--int8-cpu vnni``) is for
  artifacts that will only meet VNNI or AMX CPUs; the manifest records which.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

from pncd.data.images import feeds
from pncd.errors import PncdError, RunFailed

# TensorRT's ONNX parser takes DequantizeLinear only on activation types (float tensors): an
# INT32 bias or an INT8 weight initializer feeding a DQ node fails to parse ("only activation
# types allowed as input to this layer", onnx/onnx-tensorrt#850, microsoft/onnxruntime#14229).
# So biases stay float, weights stay float behind a Q -> DQ pair, one pair per consumer.
TENSORRT_EXTRA_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "AddQDQPairToWeight": True,
    "DedicatedQDQPair": True,
}



def to_fp16(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Write an FP16 copy of ``src`` with FP32 input/output; returns the converter options."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # per-weight "truncated to 1e-07" notices
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    repaired = _repair_fp16_types(half)
    onnx.save(half, str(dst))
    _check(dst)
    return {
        "converter": "onnxconverter_common.float16.convert_float_to_float16",
        "keep_io_types": True,
        "op_block_list": "DEFAULT_OP_BLOCK_LIST",
        "repaired_nodes": repaired,
    }


def _repair_fp16_types(model) -> int:
    """Make Cast/ConstantOfShape attributes produce the FP16 their outputs were given; count them."""
    import onnx
    from onnx import TensorProto, helper

    fp16_values = {v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16}
    fixed = 0
    for node in model.graph.node:
        if not node.output or node.output[0] not in fp16_values:
            continue
        if node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
                    fixed += 1
        elif node.op_type == "ConstantOfShape":
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is None or value.t.data_type == TensorProto.FLOAT:
                v = float(onnx.numpy_helper.to_array(value.t).reshape(-1)[0]) if value is not None else 0.0
                t = onnx.numpy_helper.from_array(np.array([v], dtype=np.float16), name="value")
                if value is not None:
                    node.attribute.remove(value)
                node.attribute.append(helper.make_attribute("value", t))
                fixed += 1
    return fixed


# INT8 where the compute is. Data-movement and comparison ops (MaxPool, Slice, Equal, Where,
# Concat, ...) stay in float: quantizing them requantizes tensors that are later compared for
# equality (ENet's max-unpooling mask), which broke ENet completely (Dice 0.004 of FP32 on LGG).
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# ONNX Runtime's CPU flavour also quantizes the additions (residual sums) and the clipping
# activations (ReLU, ReLU6 as Clip). ONNX Runtime then fuses DQ -> Add -> Q into QLinearAdd, and
# folds a Relu or Clip into the quantized convolution before it (its output range is the
# activation's), so the 8-bit chain of a block is not broken by a float op between a
# DequantizeLinear and a QuantizeLinear. At 256x256 on one thread this took ENet's INT8 from 1.0x
# to 1.3x the speed of FP32 (Add) and MobileNetV2's from 2.3x to 3.0x (Clip; bench/results/speed).
# TensorRT's symmetric flavour keeps QUANTIZED_OPS.
CPU_QUANTIZED_OPS = QUANTIZED_OPS + ("Add", "Relu", "Clip")


WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
KEEP_FLOAT_CHOICES = ("first", "last")  # and "auto" alone (pncd.export.sensitivity)


def float_layers(model_path: str | Path, keep: tuple[str, ...]) -> list[str]:
    """Names of the ONNX nodes to leave unquantized for ``keep`` ("first" and/or "last").

    "first": every node reading the graph input, so the image enters the network unquantized:
    a lesion is often the brightest outlier of a normalised scan, exactly what a calibrated
    INT8 input range clips (measured on a small trained network: symmetric INT8 lost the lesion
    class entirely, Dice ratio 0.00, and kept 99% of it with the first layer in float).
    "last": walking back from the output through weight-free nodes (Resize, Add, ...) to the
    classifier, inclusive.
    """
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    names: list[str] = []
    if "first" in keep:
        inputs = {i.name for i in m.graph.input} - {t.name for t in m.graph.initializer}
        names += [n.name for n in m.graph.node if inputs & set(n.input)]
    if "last" in keep:
        producer = {o: n for n in m.graph.node for o in n.output}
        frontier = [o.name for o in m.graph.output]
        while frontier:
            node = producer.get(frontier.pop())
            if node is None or node.name in names:
                continue
            names.append(node.name)
            if node.op_type not in WEIGHT_OPS:
                frontier += [i for i in node.input if i in producer]
    return names


ORT_METHODS = ("minmax", "entropy", "percentile")


def quantize_int8(src: str | Path, dst: str | Path, images: np.ndarray, input_name: str, method: str,
                  symmetric: bool, keep_float: tuple[str, ...] = ("first",),
                  float_nodes: list[str] | None = None, reduce_range: bool = False) -> dict[str, Any]:
    """Static INT8 QDQ quantization of ``src`` calibrated on ``images``; returns the options used.

    ``symmetric=True`` gives the TensorRT flavour (QInt8 activations and weights, zero points 0).
    ``keep_float`` names the ends of the network left in floating point (:func:`float_layers`);
    ``float_nodes``: further ONNX node names left in floating point (``--keep-float auto``).
    ``reduce_range``: 7-bit weights (correct on x86 CPUs without VNNI; see the module docstring).
    """
    if method not in ORT_METHODS:
        raise PncdError(f"--calib-method {method!r} is unknown; use one of {', '.join(ORT_METHODS)}")
    with tempfile.TemporaryDirectory(prefix="pncd-quant-") as scratch:
        pre = Path(scratch) / "preprocessed.onnx"
        pre_process(src, pre)
        excluded = [n for n in float_layers(pre, keep_float) if n not in (float_nodes or [])] + list(float_nodes or [])
        record = quantize_preprocessed(pre, dst, images, input_name, method, symmetric, excluded,
                                       reduce_range=reduce_range)
    record["keep_float"] = {"layers": list(keep_float), "nodes": excluded}
    return record


def pre_process(src: str | Path, dst: str | Path) -> None:
    """ONNX Runtime's ``quant_pre_process`` (shape inference, graph optimisation), quietly."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quant_pre_process(str(src), str(dst))
    except Exception as e:
        raise RunFailed(f"INT8 pre-processing of {Path(src).name} failed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:250] if str(e) else 'no message'})") from None


def quantize_preprocessed(pre: str | Path, dst: str | Path, images: np.ndarray, input_name: str, method: str,
                          symmetric: bool, excluded: list[str], cache: Path | None = None,
                          reduce_range: bool = False) -> dict[str, Any]:
    """``quantize_static`` of a pre-processed ONNX (:func:`pre_process`) with the nodes ``excluded``
    left in floating point; checks ``dst`` and returns the options used. ``cache``: a file for
    ONNX Runtime's calibration cache (``calibration_cache_path``, onnxruntime >= 1.32; ignored
    before), so the candidates of one sensitivity search are calibrated once: the ranges of the
    float model do not depend on which nodes are left out."""
    import inspect

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static


    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    act = QuantType.QInt8 if symmetric else QuantType.QUInt8
    extra = dict(TENSORRT_EXTRA_OPTIONS) if symmetric else {}
    ops = QUANTIZED_OPS if symmetric else CPU_QUANTIZED_OPS
    cached = ({"calibration_cache_path": str(cache)}
              if cache is not None and "calibration_cache_path" in inspect.signature(quantize_static).parameters else {})
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):  # the calibrators print progress
            warnings.simplefilter("ignore")
            quantize_static(
                str(pre), str(dst), ort_reader(images, input_name),
                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=act,
                weight_type=QuantType.QInt8, calibrate_method=methods[method], extra_options=extra,
                op_types_to_quantize=list(ops), nodes_to_exclude=list(excluded),
                reduce_range=reduce_range, **cached,
            )
    except PncdError:
        raise
    except Exception as e:
        raise RunFailed(f"INT8 quantization of {Path(pre).name} failed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:250] if str(e) else 'no message'})") from None
    moved = {} if symmetric else _keep_int8_through_moves(dst)
    _check(dst)
    return {
        "quantizer": "onnxruntime.quantization.quantize_static",
        "pre_process": "onnxruntime.quantization.shape_inference.quant_pre_process",
        "quant_format": "QDQ",
        "per_channel": True,
        "activation_type": "QInt8" if symmetric else "QUInt8",
        "weight_type": "QInt8",
        "reduce_range": reduce_range,
        "weight_bits": 7 if reduce_range else 8,
        "calibrate_method": methods[method].name,
        "op_types_to_quantize": list(ops),
        "extra_options": extra,
        **({"rewrites": moved} if moved else {}),
    }


def _keep_int8_through_moves(path: str | Path) -> dict[str, int]:
    """:func:`pncd.targets.int8_moves.keep_int8_through_moves` on the QDQ file at ``path``."""
    import onnx

    from pncd.targets.int8_moves import REWRITE, keep_int8_through_moves

    model = onnx.load(str(path))
    n = keep_int8_through_moves(model)
    if n:
        onnx.save(model, str(path))
    return {REWRITE: n}


def _check(path: str | Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as e:
        raise RunFailed(f"{path}: the converted ONNX fails onnx.checker ({str(e).splitlines()[0][:200]})") from None


def write_precision_onnx(fp32_onnx: Path, out_dir: Path, precision: str, input_name: str, calib: Any,
                         method: str, keep_float: tuple[str, ...] = ("first",),
                         symmetric: bool = False, prequantized: bool = False,
                         float_nodes: list[str] | None = None, reduce_range: bool = False) -> tuple[str, dict[str, Any]]:
    """Write the precision's ONNX into ``out_dir`` (the onnxruntime and TensorRT targets' artifact).

    FP32 is copied as exported, FP16 converted (:func:`to_fp16`), INT8 quantized on ``calib``
    (an ImageSet; :func:`quantize_int8`, ``symmetric`` for TensorRT), or, ``prequantized``, the
    QDQ ONNX of a QAT run copied as it is. Returns (file name, conversion options).
    """
    import shutil

    from pncd.targets.trt_build import ONNX_FOR_PRECISION

    name = ONNX_FOR_PRECISION[precision]
    dst = Path(out_dir) / name
    if precision == "fp32" or (precision == "int8" and prequantized):
        shutil.copyfile(fp32_onnx, dst)
        return name, {"onnx": "the QAT run's QDQ ONNX, as it is" if prequantized else "as exported"}
    if precision == "fp16":
        return name, to_fp16(fp32_onnx, dst)
    if calib is None:
        raise PncdError("INT8 needs calibration images")
    return name, quantize_int8(fp32_onnx, dst, calib.images, input_name, method, symmetric=symmetric,
                               keep_float=keep_float, float_nodes=float_nodes, reduce_range=reduce_range)
def ort_reader(images: np.ndarray, input_name: str):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``images`` (batch 1)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = feeds(images, input_name)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = feeds(images, input_name)

    return _Reader()
