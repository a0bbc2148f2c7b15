"""Torch views of a SliceSet: ``SegDataset`` (with the paper's augmentation) and lesion oversampling.

Augmentation (section 4.1 of the paper: random rotation and flips) runs through
``torchvision.transforms.v2`` on ``tv_tensors.Image`` / ``tv_tensors.Mask`` pairs, so the image
and its mask always get the same geometric transform (the mask with nearest-neighbour
interpolation). All randomness comes from torch's RNG: given torch's global RNG state the
augmented samples are the same, so a resumed training run that restores that state repeats
itself exactly.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
import torch
from torch.nn import functional as nnf
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from pncd.errors import PncdError
from pncd.data.spec import SliceSet


class SliceMaps(Protocol):
    """Maps per slice (``SegDataset``'s ``extras``): ``maps[index]`` is slice index's (C, h, w) tensors."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]: ...


class GeometryProbe(tv_tensors.TVTensor):
    """An empty tv_tensor passed along with an image through the v2 transforms: its kernels
    (registered below) transform nothing and record, in ``ops``, the flips and rotation that the
    one draw of parameters applied, so that other maps can follow in one resampling each."""

    ops: list[tuple[str, float]]

    @classmethod
    def new(cls) -> GeometryProbe:
        probe = torch.empty(0).as_subclass(cls)
        probe.ops = []
        return probe


@F.register_kernel(F.horizontal_flip, GeometryProbe)
def _probe_hflip(probe: GeometryProbe, *args: Any, **kw: Any) -> GeometryProbe:
    probe.ops.append(("hflip", 0.0))
    return probe


@F.register_kernel(F.vertical_flip, GeometryProbe)
def _probe_vflip(probe: GeometryProbe, *args: Any, **kw: Any) -> GeometryProbe:
    probe.ops.append(("vflip", 0.0))
    return probe


@F.register_kernel(F.rotate, GeometryProbe)
def _probe_rotate(probe: GeometryProbe, angle: float, *args: Any, **kw: Any) -> GeometryProbe:
    probe.ops.append(("rotate", float(angle)))
    return probe


def follow(m: torch.Tensor, ops: list[tuple[str, float]]) -> torch.Tensor:
    """A float32 copy of the map ``m`` (C, H, W) with the recorded ``ops`` applied as v2 applies
    them to an image (flips; rotation about the map's centre, counter-clockwise, bilinear), in one
    ``grid_sample`` on a channels-last copy (5-20x faster on CPU than channel-first for maps of
    many channels). Pixels from outside take the map's top-left value, per channel, and border
    pixels blend with it as v2 blends the image's with its fill."""
    hwc = m.permute(1, 2, 0)
    x = torch.empty(hwc.shape, dtype=torch.float32)
    x.copy_(hwc)
    x = x.permute(2, 0, 1)  # channels-last (C, H, W)
    if not ops:
        return x
    c, h, w = x.shape
    corner = x[:, :1, :1].clone()
    # where each output pixel centre comes from, in pixels from the centre: the inverse ops, last first
    ys = (torch.arange(h, dtype=torch.float32) + 0.5 - h / 2)[:, None].expand(h, w)
    xs = (torch.arange(w, dtype=torch.float32) + 0.5 - w / 2)[None, :].expand(h, w)
    for op, angle in reversed(ops):
        if op == "hflip":
            xs = -xs
        elif op == "vflip":
            ys = -ys
        else:
            cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            xs, ys = cos * xs - sin * ys, sin * xs + cos * ys
    grid = torch.stack((xs * (2 / w), ys * (2 / h)), dim=-1)[None]  # grid_sample's [-1, 1] (align_corners=False)
    out = nnf.grid_sample(x.sub_(corner)[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # border pixels blended with the fill as v2 blends the image's (its fill mask, one channel)
    inside = nnf.grid_sample(torch.ones(1, 1, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].mul_(inside[0]).add_(corner)


class SegDataset(Dataset):
    """``(image FloatTensor (C, H, W), mask LongTensor (H, W))`` pairs from a SliceSet.

    With ``augment``: horizontal flip (p=0.5), vertical flip (p=0.5) and a rotation uniform in
    ``[-rotation, rotation]`` degrees. Each item first draws one number from torch's global RNG
    and seeds its transforms from it and ``seed`` inside a forked RNG, so (a) the global state
    fully determines the augmentation, as the DataLoader's per-worker seeding expects, and (b)
    two datasets with different ``seed`` augment differently under the same global state.

    Pixels that rotation brings in from outside the image take the image's minimum (its
    background after normalisation) and class 0 in the mask.

    ``extras`` (optional, e.g. ``pncd distill --teacher-cache``'s cached teacher outputs):
    ``extras[index]`` is a tuple of maps (C, h, w) that belong to slice ``index``, at the image's
    resolution or below. Each item is then ``(image, mask, maps)``, the maps as float32 and given
    the same flip and rotation as the image (one draw of the transform's parameters for all,
    recorded by a :class:`GeometryProbe` and applied by :func:`follow`; a smaller map rotates
    about its own centre), bilinearly, with each map's value at its top-left pixel filling the
    rotated-in corners. The RNG draws are the same with and without ``extras``.
    """

    def __init__(self, sliceset: SliceSet, augment: bool = False, rotation: float = 15.0, seed: int = 0,
                 extras: SliceMaps | None = None) -> None:
        self.sliceset = sliceset
        self.augment = augment
        self.extras = extras
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

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        image = torch.from_numpy(np.array(self.sliceset.images[index], dtype=np.float32))
        mask = torch.from_numpy(np.array(self.sliceset.masks[index], dtype=np.int64))
        maps = None if self.extras is None else self.extras[index]
        if not self.augment:
            return (image, mask) if maps is None else (image, mask, tuple(follow(m, []) for m in maps))
        draw = int(torch.randint(0, 2**62, (1,)).item())  # consumes the caller's torch RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((draw ^ (self.seed * 0x9E3779B97F4A7C15)) % 2**63)
            low = image.min()
            # Shift so the background is 0: rotation's fill then equals the image's minimum.
            if maps is None:
                img_t, mask_t = self.transform(tv_tensors.Image(image - low), tv_tensors.Mask(mask))
            else:  # one call, one draw: the probe records what was applied, and the maps follow it
                img_t, mask_t, probe = self.transform(tv_tensors.Image(image - low), tv_tensors.Mask(mask), GeometryProbe.new())
                maps = tuple(follow(m, probe.ops) for m in maps)
        out = (img_t.as_subclass(torch.Tensor) + low, mask_t.as_subclass(torch.Tensor).long())
        return out if maps is None else (*out, maps)


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
