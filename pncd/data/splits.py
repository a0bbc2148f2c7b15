"""Case-level train/val/test splits: from ``splits.json`` when present, else from a seed.

Splitting is always by case (patient volume, or image for 2-D data), never by slice, so slices
of one patient cannot leak from training into evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pncd.errors import PncdError
from pncd.data.layout import SPLIT_NAMES, Layout, natural_key

# The splits pncd train and pncd distill load (train to learn, val to keep the best epoch): a data
# set is usable for training only when each names a case (pncd data check says so too).
TRAINING_SPLITS = ("train", "val")


def seeded_split(case_ids: list[str], seed: int, val_fraction: float, test_fraction: float) -> dict[str, list[str]]:
    """Deterministic split of ``case_ids``: the same ids, seed and fractions give the same split.

    Counts are rounded; with three or more cases every non-zero fraction gets at least one case
    and training keeps at least one.
    """
    ids = sorted(set(case_ids), key=natural_key)
    n = len(ids)
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n >= 3:
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
    while n_test + n_val > max(n - 1, 0):  # keep at least one training case
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    test = sorted((ids[i] for i in order[:n_test]), key=natural_key)
    val = sorted((ids[i] for i in order[n_test : n_test + n_val]), key=natural_key)
    train = sorted((ids[i] for i in order[n_test + n_val :]), key=natural_key)
    return {"train": train, "val": val, "test": test}


def resolve_splits(layout: Layout, seed: int, val_fraction: float, test_fraction: float,
                   fold: int | None = None, folds_file: str | None = None) -> tuple[dict[str, list[str]], str]:
    """Case ids per split and where they came from ("splits.json", "seed <n>" or
    "<folds file> fold <i>").

    Cases named in ``splits.json`` (or the folds file) but absent on disk are an error; cases on
    disk that it does not name belong to no split (only to "all").
    """
    if fold is not None:
        from pncd.data.folds import fold_splits

        splits, origin = fold_splits(layout.root, folds_file, fold, val_fraction, seed)
        source = Path(folds_file) if folds_file else layout.root / origin.split(" fold ")[0]
    elif layout.splits is None:
        return seeded_split(list(layout.cases), seed, val_fraction, test_fraction), f"seed {seed}"
    else:
        splits, origin, source = layout.splits, "splits.json", layout.root / "splits.json"
    missing = [(name, c) for name in SPLIT_NAMES for c in splits[name] if c not in layout.cases]
    if missing:
        shown = ", ".join(f"{c} ({name})" for name, c in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise PncdError(
            f"{source}: {len(missing)} listed case(s) have no image/mask pair on disk: "
            f"{shown}{more}; add the files or remove them from {source.name}"
        )
    return {name: list(splits[name]) for name in SPLIT_NAMES}, origin


def unassigned(layout: Layout, splits: dict[str, list[str]]) -> list[str]:
    """Cases on disk that no split names."""
    named = {c for ids in splits.values() for c in ids}
    return [c for c in layout.cases if c not in named]


def empty_split(root: Path, splits: dict[str, list[str]], origin: str, split: str) -> tuple[Path, str] | None:
    """Where and why ``split`` cannot be loaded (it names no case), or None when it can: the one
    rule that :func:`pncd.data.load_split` (train, eval, export) raises and ``pncd data check``
    reports, so the two cannot disagree."""
    if splits.get(split):
        return None
    if origin == "splits.json":
        return root / "splits.json", f"split {split!r} has no cases; list some in it"
    if not origin.startswith("seed "):  # a folds file's fold
        return root / origin.split(" fold ")[0], f"split {split!r} of {origin} has no cases; list some in it"
    n = sum(len(ids) for ids in splits.values())
    return root, (f"split {split!r} has no cases (from {origin}: {n} case(s) in all, and a seeded split gives "
                  "val and test one case each only from 3 cases on); add cases or write a splits.json")
