"""pncd.scoring: label maps from logits, batched prediction, per-case scores, slice choice."""

from __future__ import annotations

import numpy as np
import pytest

from pncd.scoring import (disagreement, extreme_slices, predict, predict_logits, score, slice_dice, to_labels,
                             worst_slices)
from pncd.metrics import SegMetrics


def test_to_labels_argmax_and_no_single_logit():
    logits = np.zeros((2, 3, 4, 4), np.float32)
    logits[0, 2, 1, 1] = 5
    logits[1, 1] = 1
    lab = to_labels(logits)
    assert lab.dtype == np.uint8 and lab[0, 1, 1] == 2 and lab[0, 0, 0] == 0 and (lab[1] == 1).all()
    with pytest.raises(ValueError, match="single-logit"):
        to_labels(np.array([[[[-1.0, 2.0]]]]))
    with pytest.raises(ValueError, match=r"\(B, K, H, W\)"):
        to_labels(np.zeros((2, 4, 4)))


def _two_class(x: np.ndarray) -> np.ndarray:
    return np.stack([-x[:, 0], x[:, 0]], axis=1)


def test_predict_batches_and_keeps_order():
    images = np.random.default_rng(1).standard_normal((7, 1, 4, 4)).astype(np.float32)
    sizes = []

    def model(x):
        sizes.append(len(x))
        assert x.dtype == np.float32 and x.flags.c_contiguous
        return _two_class(x)

    lab = predict(model, images, batch=3)
    np.testing.assert_array_equal(lab, (images[:, 0] > 0).astype(np.uint8))
    assert sizes == [3, 3, 1] and lab.dtype == np.uint8
    np.testing.assert_array_equal(predict_logits(model, images, batch=4), _two_class(images))
    assert predict(model, images[:0]).shape == (0, 4, 4)


def test_predict_single_fallback_only_when_asked():
    calls = []

    def fixed_batch_model(x):  # accepts only batch 1, like a static-shape graph
        calls.append(len(x))
        if len(x) != 1:
            raise RuntimeError("expected batch 1")
        return _two_class(x)

    images = np.random.default_rng(1).standard_normal((5, 1, 4, 4)).astype(np.float32)
    lab = predict(fixed_batch_model, images, batch=4, single_fallback=True)
    np.testing.assert_array_equal(lab, (images[:, 0] > 0).astype(np.uint8))
    assert calls[0] == 4 and set(calls[1:]) == {1}
    with pytest.raises(RuntimeError, match="expected batch 1"):
        predict(fixed_batch_model, images, batch=4)


def _two_cases():
    masks = np.zeros((4, 8, 8), np.int64)
    masks[0, 2:5, 2:5] = 1  # case a, slice 0
    masks[2, 1:7, 1:7] = 1  # case b, slice 0
    return masks, ["a", "a", "b", "b"]


def test_score_per_case_volumes_equals_slice_by_slice_accumulation():
    masks, ids = _two_cases()
    preds = masks.copy()
    preds[2, 1:4, 1:7] = 0  # case b loses half its lesion
    m = score(preds.astype(np.uint8), masks, ids, 2)
    by = {c["case"]: c for c in m.per_case()}
    assert by["a"]["dice"] == 1.0 and by["b"]["dice"] == pytest.approx(2 * 18 / (18 + 36))
    assert m.summary()["n_cases"] == 2 and m.summary()["dice"] == pytest.approx((1 + 2 * 18 / 54) / 2)
    one_by_one = SegMetrics(2)  # accumulated one slice at a time: the same numbers
    for i, case in enumerate(ids):
        one_by_one.update(case, preds[i], masks[i])
    assert one_by_one.summary() == m.summary() and one_by_one.per_case() == m.per_case()
    with pytest.raises(ValueError, match="differ in shape"):
        score(preds[:3], masks, ids, 2)
    with pytest.raises(ValueError, match="case ids"):
        score(preds, masks, ids[:3], 2)


def test_slice_dice_in_input_order():
    masks, _ = _two_cases()
    preds = masks.copy()
    preds[2, 1:4, 1:7] = 0
    preds[3, 0, 0] = 1  # a false positive on an empty slice
    assert slice_dice(preds, masks, 2) == pytest.approx([1.0, 1.0, 2 * 18 / 54, 0.0])
    assert slice_dice(preds[:0], masks[:0], 2) == []


def test_worst_and_extreme_slices():
    masks, _ = _two_cases()
    ref = masks.astype(np.uint8)
    art = ref.copy()
    art[2, 1:4, 1:7] = 0
    assert disagreement(art, ref).tolist() == [0, 0, 18, 0]
    assert worst_slices(art, ref, 3) == [2]  # slices that agree are never picked
    # slices with foreground: 0 (Dice 1) and 2 (Dice 2/3); the worst first, then the best
    assert extreme_slices(art, masks, 2) == [2, 0]
    assert extreme_slices(art, masks, 5) == [2, 0]
