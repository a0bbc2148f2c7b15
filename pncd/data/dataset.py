"""Torch views of a SliceSet: ``SegDataset`` (with the paper's augmentation) and lesion oversampling.

Augmentation (section 4.1 of the paper: random rotation and flips) runs through
``torchvision.transforms.v2`` on ``tv_tensors.Image`` / ``tv_tensors.Mask`` pairs, so the image
and its mask always get the same geometric transform (the mask with nearest-neighbour
interpolation). All randomness comes from torch's RNG: given torch's global RNG state the
augmented samples are the same, so a resumed training run that restores that state repeats
itself exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from pncd.errors import PncdError
from pncd.data.spec import SliceSet


class SegDataset(Dataset):
    """``(image FloatTensor (C, H, W), mask LongTensor (H, W))`` pairs from a SliceSet.

    With ``augment``: horizontal flip (p=0.5), vertical flip (p=0.5) and a rotation uniform in
    ``[-rotation, rotation]`` degrees. Each item first draws one number from torch's global RNG
    and seeds its transforms from it and ``seed`` inside a forked RNG, so (a) the global state
    fully determines the augmentation, as the DataLoader's per-worker seeding expects, and (b)
    two datasets with different ``seed`` augment differently under the same global state.

    Pixels that rotation brings in from outside the image take the image's minimum (its
    background after normalisation) and class 0 in the mask.
    """

    def __init__(self, sliceset: SliceSet, augment: bool = False, rotation: float = 15.0, seed: int = 0) -> None:
        self.sliceset = sliceset
        self.augment = augment
        self.rotation = float(rotation)
        self.seed = int(seed)
        self.transform = v2.Compose(
            [
                v2.RandomHorizontalFlip(p=0.5),
                v2.RandomVerticalFlip(p=0.5),
                v2.RandomRotation(
                    degrees=self.rotation,
                    interpolation=v2.InterpolationMode.BILINEAR,
                    fill={tv_tensors.Image: 0.0, tv_tensors.Mask: 0},
                ),
            ]
        )

    def __len__(self) -> int:
        return len(self.sliceset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.array(self.sliceset.images[index], dtype=np.float32))
        mask = torch.from_numpy(np.array(self.sliceset.masks[index], dtype=np.int64))
        if not self.augment:
            return image, mask
        draw = int(torch.randint(0, 2**62, (1,)).item())  # consumes the caller's torch RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((draw ^ (self.seed * 0x9E3779B97F4A7C15)) % 2**63)
            low = image.min()
            # Shift so the background is 0: rotation's fill then equals the image's minimum.
            img_t, mask_t = self.transform(tv_tensors.Image(image - low), tv_tensors.Mask(mask))
        return img_t.as_subclass(torch.Tensor) + low, mask_t.as_subclass(torch.Tensor).long()


def lesion_sampler_weights(sliceset: SliceSet, lesion_fraction: float) -> torch.Tensor:
    """Per-slice weights for ``WeightedRandomSampler`` so that, on average, ``lesion_fraction``
    of the drawn slices bear a lesion (any foreground pixel).

    Lesion-bearing slices share weight ``lesion_fraction`` equally and the others share the
    rest, so within each group every slice is equally likely. The weights sum to 1.
    """
    if not 0.0 <= lesion_fraction <= 1.0:
        raise PncdError(f"lesion_fraction {lesion_fraction!r} is invalid; use a fraction in [0, 1]")
    lesion = sliceset.lesion_mask()
    n_les = int(lesion.sum())
    n_bg = len(lesion) - n_les
    if len(lesion) == 0:
        raise PncdError("cannot build sampler weights for an empty slice set")
    if n_les == 0 and lesion_fraction > 0:
        raise PncdError("no slice of this split has a lesion, so lesion-bearing slices cannot be oversampled; drop the option")
    if n_bg == 0 and lesion_fraction < 1:
        raise PncdError("every slice of this split has a lesion, so lesion_fraction < 1 cannot be met; drop the option")
    w = np.where(lesion, lesion_fraction / max(n_les, 1), (1.0 - lesion_fraction) / max(n_bg, 1))
    return torch.as_tensor(w, dtype=torch.float64)
