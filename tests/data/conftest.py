"""Fixtures for the data layer tests: small hand-made data sets on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch

from pncd.data import clear_cache

from data_helpers import lesion_image, save_png


@pytest.fixture(autouse=True)
def _one_thread_and_fresh_cache():
    """One torch thread (the shared 2-core machine makes thread barriers slow) and an empty case cache."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    clear_cache()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def png_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``png_dataset(n=6, size=(40, 48), splits=None)`` writes images/ + labels/ PNGs (0/1 masks)."""

    def make(n: int = 6, size: tuple[int, int] = (40, 48), splits: dict | None = None, name: str = "png") -> Path:
        root = tmp_path / name
        for i in range(n):
            img, mask = lesion_image(*size, box=(5 + i, 15 + i, 10, 22))
            save_png(root / "images" / f"img{i}.png", img)
            save_png(root / "labels" / f"img{i}.png", mask)
        if splits is not None:
            (root / "splits.json").write_text(json.dumps(splits))
        return root

    return make
