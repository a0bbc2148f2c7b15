"""``resolve_root`` and ``load_split``: from a data set directory to a preprocessed ``SliceSet``.

Loaded cases are kept in an in-process LRU cache (bounded by bytes, ``PNCD_DATA_CACHE_MB``,
default 2048) keyed by the files' paths, modification times and the preprocessing options, so
loading "all" and then "train", or the same split in two stages of one process, reads each file
once, and a changed file is read again.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from pncd.console import progress

from pncd.errors import PncdError
from pncd.data.layout import Case, Layout, discover
from pncd.data.readers import read_pair
from pncd.data.spec import SPLITS, DataSpec, SliceSet
from pncd.data.splits import empty_split, resolve_splits

SYNTHETIC_NAME = "synthetic-v1"
SYNTHETIC_DEFAULT: dict[str, Any] = {"n_cases": 24, "n_slices": 8, "size": 128, "seed": 0}


def cache_dir() -> Path:
    """``$PNCD_CACHE`` or ``~/.cache/pncd``."""
    return Path(os.environ.get("PNCD_CACHE") or "~/.cache/pncd").expanduser()


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The data set directory; ``None`` -> the built-in synthetic data set, generated on first use.

    The synthetic set (24 cases x 8 slices at 128 x 128, seed 0) lives in
    ``cache_dir()/synthetic-v1``. It is built in a temporary directory and renamed into place,
    so a directory that exists is complete, and two processes racing to build it both end up
    with the same (deterministic) content.
    """
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise PncdError(f"{path}: data set directory not found; pass an existing directory (or none for the synthetic default)")
        return path
    return synthetic_root()


def synthetic_root(n_cases: int = SYNTHETIC_DEFAULT["n_cases"]) -> Path:
    """The built-in synthetic data set with ``n_cases`` cases (the rest as the default), generated
    on first use in ``cache_dir()/synthetic-v1`` (the default) or ``synthetic-v1-<n>cases``."""
    path = cache_dir() / (SYNTHETIC_NAME if n_cases == SYNTHETIC_DEFAULT["n_cases"] else f"{SYNTHETIC_NAME}-{n_cases}cases")
    if not path.is_dir():
        from pncd.data.synthetic import generate

        generate(path, exist_ok=True, **{**SYNTHETIC_DEFAULT, "n_cases": n_cases})
    return path


class _CaseCache:
    """Least-recently-used map of preprocessed cases, bounded by total array bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple) -> tuple | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: tuple, value: tuple) -> None:
        size = value[0].nbytes + value[1].nbytes
        if size > self.max_bytes:
            return
        self._items[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old[0].nbytes + old[1].nbytes

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0


_CACHE = _CaseCache(int(float(os.environ.get("PNCD_DATA_CACHE_MB", "2048")) * 2**20))


def clear_cache() -> None:
    """Forget every loaded case (tests, or to free memory)."""
    _CACHE.clear()


def _file_key(p: Path) -> tuple:
    st = p.stat()
    return (str(p.resolve()), st.st_mtime_ns, st.st_size)


def load_case(case: Case, spec: DataSpec) -> tuple[np.ndarray, np.ndarray, list[int], list[str]]:
    """One case preprocessed: images float32 (S, C, H, W), labels (S, H, W), slice numbers, sources."""
    files = tuple((_file_key(p), it.channels) for it in case.items for p in (*it.images, it.mask))
    key = (case.case_id, files, spec.size, spec.channels, spec.num_classes, spec.normalization)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    from pncd.data.preprocess import preprocess  # torch: imported only when loading

    imgs: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    index: list[int] = []
    sources: list[str] = []
    for item in case.items:
        x, m = read_pair(item.images, item.mask, spec.channels, spec.num_classes, item.channels)
        x, m = preprocess(x, m, spec.size, spec.normalization)
        index.extend(range(len(index), len(index) + len(x)))
        sources.extend([str(item.images[0])] * len(x))
        imgs.append(x)
        masks.append(m)
    value = (np.concatenate(imgs), np.concatenate(masks), index, sources)
    value[0].setflags(write=False)  # cached: callers get copies from concatenation in load_split
    value[1].setflags(write=False)
    _CACHE.put(key, value)
    return value


def _raise_layout_errors(layout: Layout) -> None:
    errors = layout.errors()
    if not errors:
        return
    shown = "; ".join(str(p) for p in errors[:5])
    more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
    raise PncdError(
        f"{layout.root}: {len(errors)} problem(s): {shown}{more} (run `pncd data check {layout.root}` for all)"
    )


def split_case_ids(spec: DataSpec, split: str) -> tuple[Layout, list[str]]:
    """The validated layout and the case ids of ``split`` (in splits.json order, else natural order)."""
    if split not in SPLITS:
        raise PncdError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    layout = discover(resolve_root(spec.root))
    _raise_layout_errors(layout)
    if layout.num_classes is not None and layout.num_classes != spec.num_classes:
        raise PncdError(
            f"{layout.root / 'dataset.json'}: declares {layout.num_classes} classes but num_classes is "
            f"{spec.num_classes}; set num_classes={layout.num_classes} (--num-classes)"
        )
    splits, origin = resolve_splits(layout, spec.split_seed, spec.val_fraction, spec.test_fraction, spec.fold, spec.folds_file)
    ids = list(layout.cases) if split == "all" else splits[split]
    empty = None if split == "all" else empty_split(layout.root, splits, origin, split)
    if empty is not None:
        raise PncdError(f"{empty[0]}: {empty[1]}")
    return layout, ids


def fingerprint(spec: DataSpec, split: str) -> str:
    """The identity of ``split`` of ``spec.root``: ``sha256:`` + the SHA-256 over its case ids
    and, for each of their image and mask files, the name relative to the data set's root, the
    size and the SHA-256 of the content. A data set moved or copied elsewhere keeps it; another
    data set, another split, or a changed, added or removed file changes it. Preprocessing
    (size, normalisation) is not part of it."""
    import hashlib

    from pncd.io import sha256_file

    layout, ids = split_case_ids(spec, split)
    h = hashlib.sha256(b"pncd.data-fingerprint/1\n")
    for cid in sorted(ids):
        for item in layout.cases[cid].items:
            for p in (*item.images, item.mask):
                try:
                    rel = p.relative_to(layout.root).as_posix()
                except ValueError:
                    rel = p.name
                h.update(f"{cid}\0{rel}\0{p.stat().st_size}\0{sha256_file(p)}\n".encode())
    return "sha256:" + h.hexdigest()


def load_split(spec: DataSpec, split: str) -> SliceSet:
    """Load one split ("train", "val", "test" or "all") of ``spec.root`` as a SliceSet.

    Raises PncdError on the first unusable input: unpaired files (all listed), unreadable files,
    image/mask size mismatches, labels out of range, cases in splits.json missing on disk, or an
    empty split.
    """
    layout, ids = split_case_ids(spec, split)
    images, masks, case_ids, index, sources = [], [], [], [], []
    for cid in progress(ids, desc=f"loading {split}", unit="case"):
        x, m, idx, src = load_case(layout.cases[cid], spec)
        images.append(x)
        masks.append(m)
        case_ids.extend([cid] * len(x))
        index.extend(idx)
        sources.extend(src)
    return SliceSet(
        images=np.concatenate(images).astype(np.float32, copy=False),
        masks=np.concatenate(masks).astype(np.int64),
        case_ids=case_ids,
        slice_index=index,
        sources=sources,
        spec=spec,
    )
