"""Resizing, normalisation and the DataSpec / SliceSet API."""

from __future__ import annotations

import numpy as np
import pytest

from pncd.data import DataSpec, SliceSet, load_split
from pncd.data.preprocess import normalize, resize_images, resize_masks
from pncd.errors import PncdError


def test_shapes_and_dtypes_at_requested_size(png_dataset):
    s = load_split(DataSpec(root=str(png_dataset(n=3, size=(40, 48))), size=24), "all")
    assert s.images.shape == (3, 1, 24, 24) and s.images.dtype == np.float32
    assert s.masks.shape == (3, 24, 24) and s.masks.dtype == np.int64


def test_zscore_per_slice_stats(synthetic_root):
    s = load_split(DataSpec(root=str(synthetic_root), size=32), "val")
    flat = s.images.reshape(len(s), -1)
    np.testing.assert_allclose(flat.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(flat.std(axis=1), 1, atol=1e-3)


def test_minmax_per_slice_range(synthetic_root):
    s = load_split(DataSpec(root=str(synthetic_root), size=32, normalization="minmax"), "val")
    flat = s.images.reshape(len(s), -1)
    np.testing.assert_allclose(flat.min(axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(flat.max(axis=1), 1, atol=1e-5)


def test_constant_slice_normalises_to_zero():
    x = np.full((2, 1, 4, 4), 7.0, np.float32)
    assert not normalize(x, "zscore").any() and not normalize(x, "minmax").any()


def test_resize_masks_nearest_keeps_labels_and_images_bilinear():
    m = np.zeros((1, 8, 8), np.uint8)
    m[0, 2:6, 2:6] = 2
    up = resize_masks(m, 16)
    assert set(np.unique(up)) == {0, 2} and up.sum() == 2 * 64  # area scales by 4, labels unchanged
    x = np.zeros((1, 1, 8, 8), np.float32)
    x[..., 4:] = 1.0
    xr = resize_images(x, 16)
    assert xr.shape == (1, 1, 16, 16) and 0 < xr[0, 0, 0, 7] < 1  # bilinear blends at the edge


def test_dataspec_round_trip_and_unknown_keys():
    spec = DataSpec(root="/x", size=64, channels=3, num_classes=3, normalization="minmax", split_seed=5)
    d = spec.to_dict()
    assert DataSpec.from_dict({**d, "future_option": 1}) == spec
    assert DataSpec.from_dict({}) == DataSpec()
    assert DataSpec().root is None


@pytest.mark.parametrize(
    "kw, msg",
    [({"channels": 2}, "channels"), ({"normalization": "whiten"}, "normalization"), ({"num_classes": 1}, "num_classes"),
     ({"val_fraction": 0.6, "test_fraction": 0.5}, "sum < 1")],
)
def test_dataspec_rejects_bad_values(kw, msg):
    with pytest.raises(PncdError, match=msg):
        DataSpec(**kw)


def test_sliceset_methods(synthetic_root):
    s = load_split(DataSpec(root=str(synthetic_root), size=32), "train")
    assert len(s) == 36 and len(s.cases()) == 6
    les = s.lesion_mask()
    assert les.dtype == bool and les.shape == (36,)
    np.testing.assert_array_equal(les, s.masks.reshape(36, -1).max(axis=1) > 0)
    sub = s.subset(np.flatnonzero(les))
    assert len(sub) == les.sum() and sub.lesion_mask().all()
    assert sub.case_ids == [c for c, l in zip(s.case_ids, les) if l]
    same = s.subset(les)
    np.testing.assert_array_equal(same.images, sub.images)
    assert s.subset([3, 1]).slice_index == [s.slice_index[3], s.slice_index[1]]


def test_load_split_rejects_unknown_split(synthetic_root):
    with pytest.raises(PncdError, match="unknown split 'validation'"):
        load_split(DataSpec(root=str(synthetic_root)), "validation")


def test_cached_second_load_returns_independent_copy(synthetic_root):
    spec = DataSpec(root=str(synthetic_root), size=32)
    a = load_split(spec, "val")
    a.images[:] = 0  # callers may modify their arrays ...
    b = load_split(spec, "val")
    assert b.images.std() > 0.5  # ... without corrupting the cache
    assert isinstance(b, SliceSet)
