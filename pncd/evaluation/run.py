"""``pncd eval``: per-case Dice/VOE/RVD/HD95/ASSD of a run on a split, with overlays like the paper's Fig. 5.

HD95 and ASSD (:mod:`pncd.surface`) are in the unit metrics.json's ``summary.hd95_unit`` names
(:func:`pncd.data.spacing.case_spacing`: mm from the NIfTI headers, else pixels at the run's
input size); a case with exactly one empty mask has none (``null``, counted in
``n_hd_undefined``), one with both empty has 0.

The torch side of :mod:`pncd.scoring` (predict, then score per case) lives here too:
:func:`evaluate_model` is what training and distillation validate with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import sys

import numpy as np
import torch
from torch import nn

from pncd import scoring
from pncd.errors import PncdError
from pncd.metrics import SegMetrics


def predict(model: nn.Module, images: np.ndarray, device: torch.device | str = "cpu", batch: int = 16,
            progress: bool = True) -> np.ndarray:
    """Argmax labels (N,H,W) uint8 of a torch model on preprocessed images (N,C,H,W)
    (:func:`pncd.scoring.predict` with the model as its ``infer_fn``)."""
    model.eval()
    device = torch.device(device)

    @torch.inference_mode()
    def infer(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return scoring.predict(infer, images, batch, desc="predict" if progress else None)


def score(preds: np.ndarray, sliceset: Any, distances: bool = False) -> SegMetrics:
    """Per-case metrics (3-D per patient volume) of label maps over a SliceSet; ``distances``:
    HD95 and ASSD too, at the cases' voxel spacing (:func:`pncd.data.spacing.case_spacing`)."""
    spacing: dict[str, tuple[float, float, float]] | None = None
    unit = "px"
    if distances:
        from pncd.data.spacing import case_spacing

        spacing, unit = case_spacing(sliceset)
    return scoring.score(preds, sliceset.masks, sliceset.case_ids, sliceset.spec.num_classes,
                         distances=distances, spacing=spacing, unit=unit)


def evaluate_model(model: nn.Module, sliceset: Any, device: torch.device | str = "cpu", batch: int = 16,
                   progress: bool = True) -> SegMetrics:
    """Predict and score a torch model on a SliceSet (what training and distillation validate with)."""
    return score(predict(model, sliceset.images, device, batch, progress), sliceset)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def evaluate_run(run: str | Path, split: str = "test", *, data: str | None = None, which: str = "best",
                 out: str | Path | None = None, overlays: int = 6, device: str = "auto", force: bool = False,
                 options: dict[str, Any] | None = None, echo: Callable[[str], None] = print,
                 warn: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Score a run's ``which`` checkpoint on ``split``; write ``metrics.json`` and overlay PNGs to
    ``out`` (default ``RUN/eval-SPLIT``) and return what metrics.json holds. ``options``: what
    metrics.json records as the options (default: these arguments). A run that stopped before
    its last epoch is evaluated with a warning (``run_progress`` in metrics.json records it)."""
    from pncd.checkpoint import load_model
    from pncd.data import DataSpec, load_split
    from pncd.io import atomic_dir, check_output, write_json
    from pncd.privacy import public
    from pncd.rundir import incomplete_warning, run_progress
    from pncd.runtime import resolve_device
    from pncd.viz import OVERLAY_LEGEND, OVERLAY_TITLES, overlay, save_png, slice_dice

    if options is None:
        options = {"run": str(run), "data": data, "split": split, "which": which,
                   "out": None if out is None else str(out), "overlays": overlays, "device": device, "force": force}
    run_dir = Path(run).parent if Path(run).is_file() else Path(run)
    out_dir = Path(out) if out else run_dir / f"eval-{split}"
    check_output(out_dir, force, protect=(run_dir,), names=("metrics.json",), kind="evaluation")  # before any work: --force never replaces the run
    dev = resolve_device(device)
    model, cfg = load_model(run, which, dev)
    progress = run_progress(run_dir, cfg)
    stopped = incomplete_warning(run, progress, "evaluating")
    if stopped:
        warn(stopped)
    spec = DataSpec.from_dict(cfg["data"])
    if data:
        spec.root = data
    ss = load_split(spec, split)
    if len(ss) == 0:
        raise PncdError(f"split {split!r} of {spec.root or 'the synthetic data'} is empty")
    preds = predict(model, ss.images, dev)
    metrics = score(preds, ss, distances=True)
    result: dict[str, Any] = {"run": str(run), "checkpoint": which, "split": split, "data": spec.to_dict(),
              "summary": metrics.summary(), "per_case": metrics.per_case(), "options": options,
              "run_progress": progress.record()}
    with atomic_dir(out_dir, force=force, protect=(run_dir,), kind="evaluation") as tmp:
        write_json(tmp / "metrics.json", public(result))  # no host name or absolute path
        for rank, i in enumerate(scoring.extreme_slices(preds, ss.masks, overlays)):
            save_png(tmp / f"overlay_{rank:02d}_{ss.case_ids[i]}_z{ss.slice_index[i]}.png",
                     overlay(ss.images[i], ss.masks[i], preds[i]), scale=max(2, 256 // max(ss.masks.shape[1:])),
                     titles=OVERLAY_TITLES, legend=OVERLAY_LEGEND,
                     caption=f"{ss.case_ids[i]}, slice {ss.slice_index[i]}: Dice {slice_dice(preds[i], ss.masks[i]):.3f}")
    s = result["summary"]
    unit = s["hd95_unit"]
    undefined = f", {s['n_hd_undefined']} undefined" if s["n_hd_undefined"] else ""
    echo(f"{split}: per-case Dice {fmt(s['dice'])} ± {fmt(s['dice_std'])}  VOE {fmt(s['voe'])}  RVD {fmt(s['rvd'])}  "
         f"HD95 {fmt(s['hd95'], 2)} {unit}  ASSD {fmt(s['assd'], 2)} {unit}{undefined}  "
         f"({s['n_cases']} cases) -> {out_dir / 'metrics.json'}")
    return result


def fmt(x: float | None, digits: int = 4) -> str:
    """A metric for people: 'n/a' where it is undefined (e.g. RVD with no ground truth)."""
    return "n/a" if x is None else f"{x:.{digits}f}"

