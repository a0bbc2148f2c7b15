"""OpenVINO IR from the exported ONNX: FP32, FP16 weights, INT8 with NNCF.

- FP32: ``ov.convert_model(onnx)`` saved with ``compress_to_fp16=False`` (``ov.save_model``
  compresses by default, which would make "FP32" FP16 weights).
- FP16: the same model saved with ``compress_to_fp16=True`` (FP16 weights; the CPU plugin
  decompresses them and computes at its default inference precision).
- INT8: ``nncf.quantize`` on the training calibration images, or with ``accuracy_control``
  ``nncf.quantize_with_accuracy_control`` whose validation function computes the Dice of the
  quantized model on held-out images and keeps the drop under ``max_drop`` (absolute Dice) by
  reverting the most harmful layers to floating point. Saved with ``compress_to_fp16=False``
  so the layers left in floating point keep FP32 weights. Preset MIXED by default (symmetric
  per-channel weights, asymmetric activations): on ENet trained on LGG it kept 98.2% of the
  FP32 test Dice where PERFORMANCE (symmetric activations) kept 89.6% (bench/results/lgg-cpu).

CPU portability: ``OverflowFix.ENABLE`` by default, so every quantized convolution and MatMul
keeps its weights in half the 8-bit range (7 bits): oneDNN's u8 x s8 kernels on CPUs without
VNNI add pairs of products in int16 and saturate otherwise (NNCF's own default, FIRST_LAYER,
fixes only the first layer, which pncd leaves in float anyway). ``portable=False``
(``--int8-cpu vnni``) keeps 8-bit weights for artifacts that will only meet VNNI or AMX CPUs.

Calibration methods map to NNCF's range estimators: minmax -> MINMAX, percentile ->
MEAN_QUANTILE, entropy -> HISTOGRAM (NNCF has no KL-entropy calibrator; its histogram
estimator is the closest, and the manifest records which one ran).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pncd.errors import PncdError, RunFailed
from pncd.data.images import ImageSet
from pncd.targets.base import require

NNCF_METHODS = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE", "entropy": "HISTOGRAM"}


def convert(
    onnx_path: str | Path,
    xml_path: str | Path,
    precision: str,
    input_name: str,
    calib: ImageSet | None = None,
    method: str = "minmax",
    accuracy_control: bool = False,
    validation: ImageSet | None = None,
    max_drop: float = 0.01,
    num_classes: int = 2,
    keep_float: tuple[str, ...] = ("first",),
    preset: str = "mixed",
    prequantized: bool = False,
    float_nodes: list[str] | None = None,
    portable: bool = True,
    rounding: str | None = None,
) -> dict[str, Any]:
    """Write ``xml_path`` (+ ``.bin``) for ``precision``; returns the options used. ``prequantized``:
    ``onnx_path`` is a QAT run's QDQ ONNX, whose Quantize/DequantizeLinear pairs OpenVINO runs as INT8.
    ``float_nodes``: further op friendly names NNCF leaves in floating point (``--keep-float auto``).
    ``portable``: 7-bit weights, correct on CPUs without VNNI (see the module docstring).
    ``rounding``: "nearest" (NNCF's) or "gptq" (:mod:`pncd.targets.openvino_rounding`); None: gptq for 7-bit
    weights without accuracy control, else nearest."""
    ov = require("openvino", "openvino", "the openvino target")
    model = ov.convert_model(str(onnx_path))
    record: dict[str, Any] = {"converter": "openvino.convert_model (from the ONNX file)"}
    if precision == "fp32" or (precision == "int8" and prequantized):
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
        record["compress_to_fp16"] = False
    elif precision == "fp16":
        ov.save_model(model, str(xml_path), compress_to_fp16=True)
        record["compress_to_fp16"] = True
    elif precision == "int8":
        if calib is None:
            raise PncdError("OpenVINO INT8 needs calibration images")
        q, qrec = quantize(model, input_name, calib, method, accuracy_control, validation, max_drop, num_classes,
                            keep_float, preset, float_nodes, portable=portable,
                            rounding=rounding or default_rounding(portable, accuracy_control))
        ov.save_model(q, str(xml_path), compress_to_fp16=False)
        record.update(qrec, compress_to_fp16=False)
    else:
        raise PncdError(f"precision {precision!r} is unknown for openvino; use fp32, fp16 or int8")
    return record


ROUNDINGS = ("nearest", "gptq")


def default_rounding(portable: bool, accuracy_control: bool) -> str:
    """7-bit weights lose about a point of Dice with nearest rounding (LGG MobileNetV2, 98.9% kept)
    and none with the error-compensating one (100.2%; bench/results/int8/rounding.md); with
    accuracy control NNCF chose the float layers for its own rounding, so that stays."""
    return "gptq" if portable and not accuracy_control else "nearest"


FLOAT_OPS = ("Maximum", "Minimum", "Equal", "Greater", "GreaterEqual", "Less", "LessEqual", "Select", "MaxPool", "Slice",
             "StridedSlice", "LogicalAnd", "LogicalOr", "LogicalNot")


WEIGHT_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul")


def float_layers(model, keep: tuple[str, ...]) -> list[str]:
    """Friendly names of the OpenVINO ops NNCF leaves in floating point, as ONNX Runtime's
    :func:`pncd.targets.onnxrt_build.float_layers`: "first" = ops reading the input, "last" = the
    classifier and the weight-free ops after it."""
    names: list[str] = []
    if "first" in keep:
        for param in model.get_parameters():
            for target in param.output(0).get_target_inputs():
                names.append(target.get_node().get_friendly_name())
    if "last" in keep:
        frontier = [r.input_value(0).get_node() for r in model.get_results()]
        while frontier:
            node = frontier.pop()
            kind = node.get_type_name()
            if kind in ("Parameter", "Constant") or node.get_friendly_name() in names:
                continue
            names.append(node.get_friendly_name())
            if kind not in WEIGHT_OPS:
                frontier += [v.get_node() for v in node.input_values()]
    return names


def quantize(model, input_name: str, calib: ImageSet, method: str, accuracy_control: bool,
             validation: ImageSet | None, max_drop: float, num_classes: int, keep_float: tuple[str, ...],
             preset: str = "mixed", float_nodes: list[str] | None = None, portable: bool = True,
             rounding: str = "nearest"):
    """``model`` (OpenVINO) quantized to INT8 by NNCF on ``calib``, and the record of how (for the export,
    its sensitivity search, ``pncd distill --teacher-runtime openvino-int8``). ``portable``: NNCF's overflow
    fix on every layer (7-bit weights); ``rounding`` "gptq": :mod:`pncd.targets.openvino_rounding` after NNCF."""
    nncf = require("nncf", "nncf", "OpenVINO INT8 quantization")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if method not in NNCF_METHODS:
        raise PncdError(f"--calib-method {method!r} is unknown; use one of {', '.join(NNCF_METHODS)}")
    check_rounding(rounding, accuracy_control)
    nncf.set_log_level(logging.ERROR)
    estimator = getattr(RangeEstimatorParametersSet, NNCF_METHODS[method])
    overflow_fix = OverflowFix.ENABLE if portable else OverflowFix.DISABLE
    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=estimator, overflow_fix=overflow_fix)
    calib_ds = nncf.Dataset([calib.images[i : i + 1] for i in range(len(calib))])
    # Comparisons and selections stay in float (as in the ONNX Runtime INT8 path): ENet's
    # max-unpooling mask compares a max with its inputs, which quantization breaks.
    kept = [n for n in float_layers(model, keep_float) if n not in (float_nodes or [])] + list(float_nodes or [])
    ignored = nncf.IgnoredScope(names=kept, types=list(FLOAT_OPS), validate=False)
    # 7-bit weights round twice as coarsely: NNCF's full bias correction (per layer, on the calibration
    # images) makes up for the shifted layer outputs where its fast variant did not (the demo's ENet on
    # its 4 test cases kept 98.6% of the torch Dice with fast, 99.2% with full; 8-bit weights 99.8%)
    fast_bc = not portable
    common = {"subset_size": len(calib), "fast_bias_correction": fast_bc, "ignored_scope": ignored,
              "preset": nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE}
    record: dict[str, Any] = {
        "quantizer": "nncf.quantize", "nncf_range_estimator": NNCF_METHODS[method],
        "preset": "MIXED (asymmetric activations)" if preset == "mixed" else "PERFORMANCE (symmetric activations)",
        "subset_size": len(calib), "fast_bias_correction": fast_bc, "ignored_types": list(FLOAT_OPS),
        "overflow_fix": overflow_fix.name, "weight_bits": 7 if portable else 8,
        "keep_float": {"layers": list(keep_float), "nodes": kept}, "bias_correction": "fast" if fast_bc else "full",
    }
    if accuracy_control and (validation is None or len(validation) == 0):
        raise PncdError("--accuracy-control needs held-out images with labels (a val or test split)")

    def run_nncf():
        if not accuracy_control:
            return nncf.quantize(model.clone(), calib_ds, advanced_parameters=advanced, **common)
        assert validation is not None
        items = [(validation.images[i : i + 1], validation.masks[i], validation.case_ids[i])
                 for i in range(len(validation))]
        return nncf.quantize_with_accuracy_control(
            model.clone(), calib_ds, nncf.Dataset(items), dice_validation_fn(num_classes), max_drop=float(max_drop),
            drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=advanced, **common,
        )

    try:
        try:
            q = run_nncf()
        except PncdError:
            raise
        except Exception as e:
            if fast_bc:
                raise
            # NNCF's full bias correction cannot build some layers' subgraphs when other layers are
            # in its ignored scope (nncf 3.4, ENet with blocks kept in float: KeyError
            # 'node_Conv_1662/WithoutBiases' while inserting the subgraph's outputs); its fast one
            # works layer by layer. The manifest says which ran and why.
            common["fast_bias_correction"] = record["fast_bias_correction"] = True
            record["bias_correction"] = f"fast (the full one failed in NNCF: {_one_line(e)})"
            q = run_nncf()
    except PncdError:
        raise
    except Exception as e:
        raise RunFailed(f"NNCF INT8 quantization failed ({_one_line(e)})") from e
    record["rounding"] = refine_rounding(q, model, calib, portable) if rounding == "gptq" else {"method": "nearest (NNCF's)"}
    record["int8_deconvolutions"] = 0 if accuracy_control else int8_deconvolutions(q)  # AC checked NNCF's own
    if not accuracy_control or validation is None:
        return q, record
    record.update(
        quantizer="nncf.quantize_with_accuracy_control",
        accuracy_control={"metric": "Dice (per case, foreground classes)", "max_drop": float(max_drop),
                          "drop_type": "absolute", "validation_images": len(validation),
                          "validation_split": validation.split},
    )
    return q, record


DECONVOLUTIONS = ("ConvolutionBackpropData", "GroupConvolutionBackpropData")


def int8_deconvolutions(q) -> int:
    """Give each transposed convolution of ``q`` (NNCF's INT8 model, changed in place) a signed
    symmetric 8-bit input quantizer covering the asymmetric one NNCF put there; returns how many.

    OpenVINO's CPU plugin runs a transposed convolution in INT8 only when its input quantizer has no
    zero point (u8 from 0, or i8 over [-a, a*127/128]); behind NNCF's asymmetric activations (preset
    MIXED) it ran them in f32 with their quantize-dequantize around, as costly as FP32 (11% of ENet's
    INT8 time at 256x256, its three up-sampling convolutions). The new range [-a, a*127/128], a =
    max(-low, high*128/127), holds the old one at a step of a/128 (at most twice NNCF's)."""
    import openvino.opset13 as ops

    changed = 0
    for op in q.get_ops():
        if op.get_type_name() not in DECONVOLUTIONS:
            continue
        fq = op.input_value(0).get_node()
        if fq.get_type_name() != "FakeQuantize" or fq.get_attributes().get("levels") != 256:
            continue
        bounds = [fq.input_value(i).get_node() for i in range(1, 5)]
        if any(b.get_type_name() != "Constant" or np.asarray(b.get_data()).size != 1 for b in bounds):
            continue  # per-tensor ranges only
        low, high = (float(np.asarray(b.get_data()).reshape(-1)[0]) for b in bounds[2:])
        if low >= 0 or high <= 0:
            continue  # no zero point to drop (u8 from 0), or a range the plugin handles as it is
        a = max(-low, high * 128 / 127)
        lo, hi = np.float32(-a), np.float32(a * 127 / 128)
        sym = ops.fake_quantize(fq.input_value(0), lo, hi, lo, hi, 256)
        sym.set_friendly_name(f"{fq.get_friendly_name()}/symmetric_for_{op.get_friendly_name()}")
        op.input(0).replace_source_output(sym.output(0))
        changed += 1
    return changed


def check_rounding(rounding: str | None, accuracy_control: bool) -> None:
    """``--ov-rounding``'s value, and the pair it may not make (also checked by ``pncd export``
    before any work, as one line)."""
    if rounding is not None and rounding not in ROUNDINGS:
        raise PncdError(f"--ov-rounding {rounding!r} is unknown; use one of {', '.join(ROUNDINGS)}")
    if rounding == "gptq" and accuracy_control:
        raise PncdError("--ov-rounding gptq does not go with --accuracy-control (NNCF picks the layers it leaves "
                        "in float for its own rounding); use --ov-rounding nearest")


def refine_rounding(q, model, calib: ImageSet, portable: bool) -> dict[str, Any]:
    """NNCF's 1x1 convolution weights in ``q`` rounded again on ``calib`` (in place); its record."""
    import openvino as ov

    from pncd.targets import openvino_rounding as rounding
    from pncd.targets.openvino_core import compile_model

    core = ov.Core()
    levels = (rounding.LEVEL_MIN, rounding.LEVEL_MAX) if portable else (-127, 127)
    try:
        return rounding.refine(q, model, calib.images,
                               lambda m: compile_model(m, "CPU", precision_hint="f32", performance_hint=None, core=core),
                               level_range=levels)
    except np.linalg.LinAlgError as e:
        raise RunFailed(f"rounding NNCF's weights again failed ({_one_line(e)}); use --ov-rounding nearest") from e


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:250] if str(e) else 'no message'}"


def dice_validation_fn(num_classes: int):
    """NNCF validation function: (Dice per case over the items, per-item Dice) of a compiled model.

    Items are (image (1, C, H, W), label map (H, W), case id); predictions and scores come from
    :mod:`pncd.scoring`, as everywhere else."""
    from pncd.scoring import predict, score, slice_dice

    def validate(compiled_model, items) -> tuple[float, list[float]]:
        items = list(items)
        if not items:
            return 0.0, []
        out = compiled_model.output(0)
        images = np.concatenate([image for image, _, _ in items])
        masks = np.stack([mask for _, mask, _ in items])
        preds = predict(lambda x: compiled_model(x)[out], images, batch=1)
        dice = score(preds, masks, [case for _, _, case in items], num_classes).summary()["dice"]
        return float(dice or 0.0), slice_dice(preds, masks, num_classes)

    return validate
