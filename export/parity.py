"""Parity of an export against its torch model on held-out images, and the export-time checks.

Numbers (all on the same held-out images, see :mod:`pncd.export.calibration`):

- ``max_abs_logit_diff`` / ``mean_abs_logit_diff``: logits of the export minus torch's, with
  ``logit_scale`` (the largest |torch logit|) for context;
- ``argmax_agreement``: the fraction of pixels whose predicted class is the same;
- ``dice_vs_torch``: Dice of the export's segmentation with torch's as the reference
  (per case, :func:`pncd.scoring.score`);
- ``dice_gt_torch`` / ``dice_gt_export``: Dice of each against the ground truth, and
  ``dice_ratio`` = export / torch, the MLPerf Inference convention (3D-UNet on KiTS19: a
  quantized model keeps at least 99% of the FP32 model's Dice).

Checks: FP32 needs argmax agreement of at least 99.99%, FP16 at least 99.9% (else PncdError,
and the export writes nothing); INT8 warns when ``dice_ratio`` is below 0.99, or cannot be
computed because torch's own Dice is 0, and fails with ``strict``.

Predictions and scores come from :mod:`pncd.scoring`, the one evaluation API. Polygraphy's
``Comparator`` is not used: Polygraphy is an optional dependency (the tensorrt extra) while
every target runs this check, and what decides here (argmax agreement, per-case Dice) is not a
tensor tolerance; the logit differences it would add are two numpy lines.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pncd.errors import RunFailed
from pncd.scoring import predict_logits, score, to_labels

MIN_AGREEMENT = {"fp32": 0.9999, "fp16": 0.999}
MIN_INT8_DICE_RATIO = 0.99


def runner_logits(runner, input_name: str, output_name: str, images: np.ndarray, batch: int = 1,
                  desc: str | None = None) -> np.ndarray:
    """Logits of an (active or inactive) runner over ``images`` (N, C, H, W), float32."""
    runner.activate()
    return predict_logits(lambda x: runner.infer({input_name: x})[output_name], images, batch, desc=desc)


def torch_logits(model, images: np.ndarray, batch: int = 8) -> np.ndarray:
    """Reference logits of the torch model (eval mode, CPU)."""
    import torch

    model = model.eval()
    with torch.inference_mode():
        return predict_logits(lambda x: model(torch.from_numpy(x)).float().numpy(), images, batch)


def seg_dice(pred: np.ndarray, ref: np.ndarray, case_ids: list[str], num_classes: int) -> float | None:
    """Per-case Dice (mean over cases) of label maps ``pred`` against ``ref`` (N, H, W)."""
    return score(pred, ref, case_ids, num_classes).summary()["dice"]


def compare(ref: np.ndarray, out: np.ndarray, masks: np.ndarray, case_ids: list[str],
            num_classes: int) -> dict[str, Any]:
    """Parity numbers of export logits ``out`` against torch logits ``ref`` (see module docstring)."""
    if ref.shape != out.shape:
        raise RunFailed(f"the export returns logits of shape {tuple(out.shape)}, torch {tuple(ref.shape)}; "
                        "the export does not match its model")
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    finite = bool(np.isfinite(out).all())
    p_ref, p_out = to_labels(ref), to_labels(out)
    d_torch = seg_dice(p_ref, masks, case_ids, num_classes)
    d_export = seg_dice(p_out, masks, case_ids, num_classes)
    ratio = d_export / d_torch if d_torch and d_export is not None else None
    return {
        "images": int(len(ref)),
        "cases": len(dict.fromkeys(case_ids)),
        "pixels": int(p_ref.size),
        "finite": finite,
        "max_abs_logit_diff": float(np.nanmax(diff)) if finite else float("inf"),
        "mean_abs_logit_diff": float(np.nanmean(diff)) if finite else float("inf"),
        "logit_scale": float(np.abs(ref).max()),
        "argmax_agreement": float((p_ref == p_out).mean()),
        "dice_vs_torch": seg_dice(p_out, p_ref, case_ids, num_classes),
        "dice_gt_torch": d_torch,
        "dice_gt_export": d_export,
        "dice_ratio": ratio,
    }


WEAK_FP32_DICE = 0.2  # below it, a failed INT8 check's message says the FP32 model hardly segments (message only)


def check(precision: str, result: dict[str, Any], strict: bool = False, what: str = "the export") -> dict[str, Any]:
    """Apply the export-time rule for ``precision``: PncdError on failure, else the check record."""
    warnings: list[str] = []
    if not result["finite"]:
        raise RunFailed(f"{what} ({precision}) returns NaN or infinite logits on held-out images; "
                        "nothing was written (FP16 overflow? try fp32)")
    if precision in MIN_AGREEMENT:
        need = MIN_AGREEMENT[precision]
        got = result["argmax_agreement"]
        rule = f"argmax agreement with torch >= {need:.2%}"
        if got < need:
            raise RunFailed(
                f"{what} ({precision}) agrees with torch on {got:.4%} of pixels, below the required {need:.2%} "
                f"(max |logit difference| {result['max_abs_logit_diff']:.3g}); nothing was written"
            )
        return {"rule": rule, "passed": True, "warnings": warnings}
    rule = f"INT8 Dice >= {MIN_INT8_DICE_RATIO:.0%} of torch FP32 Dice (ground truth, held-out images)"
    ratio = result["dice_ratio"]
    if ratio is None:
        warnings.append(f"INT8 accuracy not judged: torch FP32 Dice on the held-out images is "
                        f"{result['dice_gt_torch']} (an untrained or degenerate model?)")
    elif ratio < MIN_INT8_DICE_RATIO:
        below = (f"INT8 keeps {ratio:.2%} of the FP32 Dice ({result['dice_gt_export']:.4f} vs "
                 f"{result['dice_gt_torch']:.4f}), below {MIN_INT8_DICE_RATIO:.0%}")
        if strict:  # the default: a failed check writes nothing
            weak = (f" (the FP32 model itself scores only {result['dice_gt_torch']:.4f} there: a ratio of two small "
                    "Dice values is noisy; train it longer first)" if result["dice_gt_torch"] < WEAK_FP32_DICE else "")
            raise RunFailed(f"{what}: {below}{weak}; nothing was written: calibrate on more images (--calib-size), "
                            "try another --calib-method, --keep-float auto, or --accuracy-control for openvino "
                            "(--no-strict writes it anyway, with the warning in its manifest)")
        warnings.append(below)
    return {"rule": rule, "passed": not warnings, "warnings": warnings}
