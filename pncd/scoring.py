"""One way to evaluate a segmentation network: predict label maps, then score them per case.

Every place that turns a network's outputs into Dice/VOE/RVD uses these functions (``pncd eval``
and the training loop through :mod:`pncd.evaluation.run`, the bench, the export parity check and
OpenVINO's accuracy control), so they all agree on what a prediction is and what a case is:

- :func:`predict` / :func:`predict_logits`: run ``infer_fn`` over images ``batch`` at a time.
  ``infer_fn`` takes float32 images (B, C, H, W) and returns logits (B, K, H, W) with K >= 2 (one
  channel per class, background included: :class:`pncd.data.DataSpec` allows no fewer than 2
  classes, so a single-logit output is an error, not a second convention);
- :func:`to_labels`: logits -> argmax labels (B, H, W) uint8 (ties: the lowest class);
- :func:`score`: label maps against reference labels, per case (patient volume): a
  :class:`pncd.metrics.SegMetrics` (``summary()``, ``per_case()``); with ``distances=True``
  also HD95 and ASSD per case, in the units of ``spacing`` (:func:`pncd.data.spacing.case_spacing`
  gives a SliceSet's);
- :func:`slice_dice`: mean foreground Dice of each slice on its own, in input order;
- :func:`worst_slices` (the slices where two predictions disagree most) and
  :func:`extreme_slices` (the worst and best lesion slices against the ground truth): which
  slices an overlay shows.

Nothing here imports torch; a torch model is one ``infer_fn`` away (see :func:`pncd.evaluation.run.predict`).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from pncd.metrics import SegMetrics, dice

__all__ = ["InferFn", "to_labels", "predict", "predict_logits", "score", "slice_dice", "disagreement",
           "worst_slices", "extreme_slices"]

InferFn = Callable[[np.ndarray], np.ndarray]
"""float32 images (B, C, H, W) -> logits (B, K, H, W), K >= 2 (anything ``np.asarray`` accepts)."""


def to_labels(logits: np.ndarray) -> np.ndarray:
    """(B, K, H, W) logits, K >= 2 -> (B, H, W) uint8 argmax labels."""
    logits = np.asarray(logits)
    if logits.ndim != 4:
        raise ValueError(f"expected (B, K, H, W) logits, got shape {logits.shape}")
    if logits.shape[1] < 2:
        raise ValueError(f"expected one logit channel per class (at least 2, background included), got "
                         f"{logits.shape[1]}: a single-logit network is not supported")
    return logits.argmax(axis=1).astype(np.uint8)


def _run(infer_fn: InferFn, images: np.ndarray, batch: int, convert: Callable[[np.ndarray], np.ndarray],
         single_fallback: bool, desc: str | None) -> list[np.ndarray]:
    """``convert(infer_fn(x))`` for consecutive slices of ``images``; see :func:`predict`."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    out: list[np.ndarray] = []
    bar = None
    if desc is not None:
        from pncd.console import progress

        bar = progress(total=len(images), desc=desc, unit="img")
    i = 0
    try:
        while i < len(images):
            x = np.ascontiguousarray(images[i : i + batch], dtype=np.float32)
            try:
                out.append(convert(infer_fn(x)))
            except Exception:
                if batch == 1 or not single_fallback:
                    raise
                batch = 1  # a fixed-batch graph: single images for the rest
                continue
            i += len(x)
            if bar is not None:
                bar.update(len(x))
    finally:
        if bar is not None:
            bar.close()
    return out


def predict(infer_fn: InferFn, images: np.ndarray, batch: int = 8, *, single_fallback: bool = False,
            desc: str | None = None) -> np.ndarray:
    """Label maps (N, H, W) uint8 of ``infer_fn`` on ``images`` (N, C, H, W), ``batch`` at a time.

    ``single_fallback``: when a batch fails, go on one image at a time (a graph exported with a
    fixed batch of 1); the error is raised if a single image fails too. ``desc``: a progress bar
    with this label (None: none).
    """
    out = _run(infer_fn, images, batch, to_labels, single_fallback, desc)
    return np.concatenate(out, axis=0) if out else np.zeros((0, *images.shape[2:]), np.uint8)


def predict_logits(infer_fn: InferFn, images: np.ndarray, batch: int = 8, *, single_fallback: bool = False,
                   desc: str | None = None) -> np.ndarray:
    """Logits (N, K, H, W) float32 of ``infer_fn`` on ``images``, as :func:`predict` batches them."""
    out = _run(infer_fn, images, batch, lambda y: np.asarray(y, dtype=np.float32), single_fallback, desc)
    if not out:
        raise ValueError("no images to predict")
    return np.concatenate(out, axis=0)


def score(predictions: np.ndarray, labels: np.ndarray, case_ids: Sequence[str], num_classes: int, *,
          distances: bool = False, spacing: Mapping[str, Sequence[float]] | None = None,
          unit: str = "px") -> SegMetrics:
    """Label maps ``predictions`` (N, H, W) against ``labels`` (the ground truth, or another
    prediction taken as the reference), scored per case: slice ``i`` belongs to ``case_ids[i]``
    and a case is scored as one volume. ``.summary()`` has the means, ``.per_case()`` the rows.
    ``distances``: HD95 and ASSD too, with ``spacing[case]`` (slice, row, column) in ``unit``
    (:class:`pncd.metrics.SegMetrics`)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
    if len(case_ids) != len(labels):
        raise ValueError(f"{len(case_ids)} case ids for {len(labels)} slices")
    m = SegMetrics(num_classes=num_classes, distances=distances, spacing=spacing, unit=unit)
    ids = np.asarray(case_ids)
    for case in dict.fromkeys(case_ids):
        sel = np.flatnonzero(ids == case)
        m.update(case, predictions[sel], labels[sel])
    return m


def slice_dice(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """Dice of each slice on its own (mean over foreground classes; 1.0 where both are empty), in input order."""
    m = SegMetrics(num_classes=num_classes)
    if len(predictions):
        m.update("slices", np.asarray(predictions), np.asarray(labels))
    return [row["dice"] for row in m.per_slice()]


def disagreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels whose labels differ, counted per slice: (N,)."""
    return (a != b).reshape(len(a), -1).sum(axis=1)


def worst_slices(predictions: np.ndarray, reference: np.ndarray, k: int) -> list[int]:
    """Indices of up to ``k`` slices where ``predictions`` and ``reference`` disagree most (by
    pixels; ties: lower index first); slices that agree are never picked."""
    counts = disagreement(predictions, reference)
    order = np.argsort(-counts, kind="stable")
    return [int(i) for i in order[:k] if counts[i] > 0]


def extreme_slices(predictions: np.ndarray, labels: np.ndarray, n: int) -> list[int]:
    """``n`` slices with foreground in the prediction or the ground truth: the ``n // 2`` with the
    lowest foreground Dice, then the highest (the informative overlays of ``pncd eval``)."""
    scored = []
    for i in range(len(predictions)):
        gt, pr = labels[i] > 0, predictions[i] > 0
        if gt.any() or pr.any():
            scored.append((dice(pr, gt), i))
    scored.sort()
    picks = [i for _, i in scored[: n // 2]]
    best = [i for _, i in scored[::-1] if i not in picks]
    return picks + best[: n - len(picks)]
