"""What to load (``DataSpec``) and what comes out (``SliceSet``).

``DataSpec`` is saved in every run's ``config.json`` (``to_dict``) so that later stages rebuild
exactly the same inputs; ``from_dict`` ignores keys it does not know, so a config written by a
newer pncd still loads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import numpy as np

from pncd.errors import PncdError

NORMALIZATIONS = ("zscore", "minmax")
SPLITS = ("train", "val", "test", "all")


@dataclass
class DataSpec:
    """How to turn a data set directory into network inputs.

    ``root=None`` means the built-in synthetic data set (generated once and cached, see
    :func:`pncd.data.resolve_root`). Images are resized to ``size`` x ``size``, given
    ``channels`` (1 or 3) and normalised per slice (``normalization``: "zscore" or "minmax").
    ``split_seed``, ``val_fraction`` and ``test_fraction`` only matter when the data set has no
    ``splits.json``. ``fold`` picks a cross-validation fold of ``folds_file`` (or of the
    ``folds.json`` / nnU-Net ``splits_final.json`` beside the data) instead of ``splits.json``.
    """

    root: str | None = None
    size: int = 128
    channels: int = 1
    num_classes: int = 2
    normalization: str = "zscore"
    split_seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    fold: int | None = None  # a cross-validation fold: its train/val/test replace splits.json
    folds_file: str | None = None  # the folds file (None: folds.json or splits_final.json beside the data)

    def __post_init__(self) -> None:
        if self.root is not None:
            self.root = str(self.root)
        if self.folds_file is not None:
            self.folds_file = str(self.folds_file)
        if self.fold is not None and (isinstance(self.fold, bool) or int(self.fold) != self.fold or self.fold < 0):
            raise PncdError(f"fold {self.fold!r} is invalid; use a fold number >= 0")
        if self.fold is None and self.folds_file is not None:
            raise PncdError(f"{self.folds_file}: a folds file is given without --fold; name the fold to use (0, 1, ...)")
        if int(self.size) != self.size or self.size < 8:
            raise PncdError(f"data size {self.size!r} is invalid; use a whole number of pixels >= 8 (e.g. 128)")
        self.size = int(self.size)
        if self.channels not in (1, 3):
            raise PncdError(f"data channels {self.channels!r} is invalid; use 1 (grayscale) or 3 (RGB)")
        if int(self.num_classes) != self.num_classes or self.num_classes < 2:
            raise PncdError(f"num_classes {self.num_classes!r} is invalid; use 2 for binary masks or more")
        self.num_classes = int(self.num_classes)
        if self.normalization not in NORMALIZATIONS:
            raise PncdError(f"normalization {self.normalization!r} is unknown; use one of {', '.join(NORMALIZATIONS)}")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise PncdError(f"{name} {v!r} is invalid; use a fraction in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise PncdError("val_fraction + test_fraction must leave some cases for training (sum < 1)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class SliceSet:
    """2-D slices ready for a network, with where each came from.

    ``images`` float32 (N, C, H, W), normalised; ``masks`` int64 (N, H, W) class labels;
    ``case_ids[i]`` / ``slice_index[i]`` / ``sources[i]``: the case (patient volume, or image for
    2-D data), the slice number inside it and the image file of slice ``i``.
    """

    images: np.ndarray
    masks: np.ndarray
    case_ids: list[str]
    slice_index: list[int]
    sources: list[str]
    spec: DataSpec = field(default_factory=DataSpec)

    def __post_init__(self) -> None:
        n = len(self.images)
        if not (len(self.masks) == len(self.case_ids) == len(self.slice_index) == len(self.sources) == n):
            raise ValueError("SliceSet fields must all have one entry per slice")

    def __len__(self) -> int:
        return len(self.images)

    def cases(self) -> list[str]:
        """Case ids in order of first appearance, each once."""
        return list(dict.fromkeys(self.case_ids))

    def lesion_mask(self) -> np.ndarray:
        """Boolean (N,): slices with any foreground (class > 0) pixel."""
        if len(self) == 0:
            return np.zeros(0, dtype=bool)
        return np.asarray((self.masks.reshape(len(self), -1) > 0).any(axis=1), dtype=bool)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "SliceSet":
        """A new SliceSet with the slices at ``indices`` (ints, or a boolean mask of length N)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean subset mask must have shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        return SliceSet(
            images=self.images[idx],
            masks=self.masks[idx],
            case_ids=[self.case_ids[i] for i in idx],
            slice_index=[self.slice_index[i] for i in idx],
            sources=[self.sources[i] for i in idx],
            spec=self.spec,
        )
