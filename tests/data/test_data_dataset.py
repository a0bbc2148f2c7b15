"""SegDataset (augmentation) and lesion oversampling weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from pncd.data import DataSpec, SegDataset, SliceSet, lesion_sampler_weights, load_split
from pncd.errors import PncdError


def _bright_corner_set(n: int = 12, size: int = 32) -> SliceSet:
    """Images whose only bright region is a lesion square in the top-left quadrant, with its mask."""
    rng = np.random.default_rng(0)
    images = rng.normal(0, 0.1, (n, 1, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), np.int64)
    images[:, :, 4:12, 6:14] += 5.0
    masks[:, 4:12, 6:14] = 1
    return SliceSet(images, masks, [f"c{i}" for i in range(n)], [0] * n, ["x.png"] * n, DataSpec(size=size))


def test_no_augmentation_returns_the_slice():
    s = _bright_corner_set()
    img, mask = SegDataset(s)[3]
    assert img.dtype == torch.float32 and img.shape == (1, 32, 32)
    assert mask.dtype == torch.int64 and mask.shape == (32, 32)
    assert torch.equal(img, torch.from_numpy(s.images[3])) and torch.equal(mask, torch.from_numpy(s.masks[3]))


def test_augmentation_moves_mask_with_the_lesion():
    ds = SegDataset(_bright_corner_set(), augment=True, rotation=30.0)
    torch.manual_seed(0)
    moved = 0
    for i in range(12):
        img, mask = ds[i]
        bright = img[0] > 2.5
        fg = mask == 1
        # Same geometric transform: the bright lesion and the mask overlap almost exactly.
        inter = (bright & fg).sum().item()
        assert inter / max(fg.sum().item(), 1) > 0.85 and inter / max(bright.sum().item(), 1) > 0.85
        assert set(mask.unique().tolist()) <= {0, 1}
        moved += int(not fg[4:12, 6:14].all())
    assert moved >= 6  # flips/rotations really moved the lesion in most samples


def test_rotation_fill_is_background_not_zero():
    s = _bright_corner_set()
    s.images[:] -= 3.0  # background far below zero, like a z-scored MRI slice
    ds = SegDataset(s, augment=True, rotation=45.0)
    torch.manual_seed(1)
    img, _ = ds[0]
    assert img.max() < 3.0 and img.min() > -3.5  # corners filled with the image minimum, not with 0
    assert (img < -2.5).float().mean() > 0.5


def test_augmentation_reproducible_from_torch_global_rng():
    ds = SegDataset(_bright_corner_set(), augment=True)
    torch.manual_seed(42)
    first = [ds[i] for i in range(6)]
    state = torch.get_rng_state()
    after = [ds[i] for i in range(6, 12)]
    torch.manual_seed(42)
    again = [ds[i] for i in range(6)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    torch.set_rng_state(state)  # "resume" from the middle
    resumed = [ds[i] for i in range(6, 12)]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(after, resumed))
    other_seed = SegDataset(ds.sliceset, augment=True, seed=1)
    torch.manual_seed(42)
    differs = [other_seed[i] for i in range(6)]
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, differs))


def test_dataloader_batches(synthetic_root):
    s = load_split(DataSpec(root=str(synthetic_root), size=32), "train")
    x, y = next(iter(DataLoader(SegDataset(s, augment=True), batch_size=4)))
    assert x.shape == (4, 1, 32, 32) and y.shape == (4, 32, 32) and y.dtype == torch.int64


def test_lesion_sampler_weights_reach_the_fraction(synthetic_root):
    s = load_split(DataSpec(root=str(synthetic_root), size=32), "train")
    les = torch.from_numpy(s.lesion_mask())
    assert 0 < les.float().mean() < 0.9
    w = lesion_sampler_weights(s, 0.9)
    assert w.dtype == torch.float64 and w.shape == (len(s),)
    assert w[les].sum().item() == pytest.approx(0.9) and w.sum().item() == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor(list(WeightedRandomSampler(w, 20000, replacement=True, generator=g)))
    assert les[draws].float().mean().item() == pytest.approx(0.9, abs=0.01)


def test_lesion_sampler_weights_refuses_impossible_requests():
    s = _bright_corner_set()  # every slice has a lesion
    with pytest.raises(PncdError, match="every slice"):
        lesion_sampler_weights(s, 0.5)
    s.masks[:] = 0
    with pytest.raises(PncdError, match="no slice"):
        lesion_sampler_weights(s, 0.5)
    with pytest.raises(PncdError, match="lesion_fraction"):
        lesion_sampler_weights(s, 1.5)
