"""Preprocessed images with their labels, as the export, the parity check and INT8 calibration
pass them around, and how they are picked and fed.

Images are picked evenly spaced over a split (deterministic, spread over all cases rather than
the first case's slices).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np


@dataclass
class ImageSet:
    """Preprocessed images (N, C, H, W) float32, label maps (N, H, W) and where they came from."""

    images: np.ndarray
    masks: np.ndarray
    case_ids: list[str]
    split: str
    root: str
    total: int  # slices in the split before selection
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


def evenly_spaced(total: int, count: int) -> np.ndarray:
    """``min(count, total)`` indices spread evenly over ``range(total)`` (first and last included)."""
    if total <= 0 or count <= 0:
        return np.zeros(0, dtype=np.int64)
    if count >= total:
        return np.arange(total, dtype=np.int64)
    return np.unique(np.linspace(0, total - 1, count).round().astype(np.int64))


def feeds(images: np.ndarray, input_name: str) -> Iterator[dict[str, np.ndarray]]:
    """One batch-1 feed per image."""
    for i in range(len(images)):
        yield {input_name: np.ascontiguousarray(images[i : i + 1], dtype=np.float32)}
