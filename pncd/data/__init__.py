"""The data layer: read a segmentation data set and turn it into normalised 2-D slices.

Layouts read as they stand (details in :mod:`pncd.data.layout`): ``images/`` + ``labels/`` (or
``masks/``) paired by file stem, in PNG, JPEG, TIFF, BMP (gray or RGB) or NIfTI volumes cut into
slices along the last axis; and nnU-Net v2 raw data sets (``imagesTr/``, ``labelsTr/``,
``dataset.json``). Mask conventions (0/1, 0/255, 3-channel, JPEG noise, class labels):
:func:`pncd.data.readers.to_labels`.

Preprocessing (:mod:`pncd.data.preprocess`): resize to ``size`` x ``size`` (bilinear for
images, nearest for masks), 1 or 3 channels (gray repeated, RGB to gray by luma), and per-slice
normalisation: "zscore" (default) ``(x - mean) / (std + 1e-6)`` over the slice, or "minmax" to
[0, 1].

Splits: ``splits.json`` when present, else a deterministic case-level split from
``split_seed`` (default 70/15/15); slices of one case never cross splits.

Main entry points: :class:`DataSpec`, :func:`load_split` -> :class:`SliceSet`,
:func:`resolve_root`, :class:`SegDataset`, :func:`lesion_sampler_weights`,
:func:`pncd.data.synthetic.generate`.
"""

from typing import TYPE_CHECKING, Any

from pncd.data.spec import DataSpec, SliceSet

if TYPE_CHECKING:
    from pncd.data.dataset import SegDataset, lesion_sampler_weights
    from pncd.data.loading import clear_cache, load_split, resolve_root

# Imported on first use, so `pncd data check` and `pncd data synth` start without torch.
_LAZY = {
    "SegDataset": "pncd.data.dataset",
    "lesion_sampler_weights": "pncd.data.dataset",
    "clear_cache": "pncd.data.loading",
    "load_split": "pncd.data.loading",
    "resolve_root": "pncd.data.loading",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pncd.data' has no attribute {name!r}")

__all__ = [
    "DataSpec",
    "SliceSet",
    "SegDataset",
    "clear_cache",
    "lesion_sampler_weights",
    "load_split",
    "resolve_root",
]
