"""Patient-level k-fold cross-validation splits.

A folds file names, for each fold ``i``, the cases held out for testing (``test``) and, among the
rest, the cases that select the best epoch (``val``) and those trained on (``train``). Every case
is held out in exactly one fold, and no case is ever in two splits of one fold, so per-patient
results of all folds together cover each patient once, and no fold is tuned on the patients it
scores.

Folds are stratified by lesion burden: cases are ordered by their foreground voxel count and
dealt out in blocks of ``k`` (each block shuffled by the seed), so every fold gets a similar mix
of small, large and absent lesions. The val cases of each fold are chosen the same way from its
training cases.

Two file formats are read and written:

- pncd's ``folds.json``: ``{"format": "pncd-folds/1", "k", "seed", "val_fraction",
  "stratified_by", "folds": [{"train", "val", "test"}, ...]}``;
- nnU-Net v2's ``splits_final.json``: a list of ``{"train", "val"}`` where nnU-Net's ``val`` is
  the held-out fold. Read as pncd folds, nnU-Net's ``val`` is pncd's ``test``, and pncd's ``val``
  is drawn from nnU-Net's ``train`` (``val_fraction``, stratified, seeded), so no held-out case
  ever selects an epoch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pncd.errors import PncdError
from pncd.data.layout import Layout, natural_key

FORMAT = "pncd-folds/1"
FOLDS_FILE = "folds.json"
NNUNET_FILE = "splits_final.json"
FOLD_SPLITS = ("train", "val", "test")


def lesion_burden(layout: Layout, num_classes: int = 2) -> dict[str, int]:
    """Foreground voxels (class > 0) per case, read from the masks."""
    from pncd.data.readers import read_mask

    out: dict[str, int] = {}
    for cid, case in layout.cases.items():
        out[cid] = int(sum(int((read_mask(item.mask, num_classes) > 0).sum()) for item in case.items))
    return out


def _stratified_deal(ids: list[str], burden: dict[str, int], k: int, rng: np.random.Generator) -> list[list[str]]:
    """``ids`` dealt into ``k`` groups: sorted by burden, each block of k shuffled, then dealt."""
    order = sorted(ids, key=lambda c: (burden.get(c, 0), natural_key(c)))
    groups: list[list[str]] = [[] for _ in range(k)]
    for start in range(0, len(order), k):
        block = order[start:start + k]
        # which groups receive this block: the emptiest first, ties broken by the seed
        slots = sorted(range(k), key=lambda g: (len(groups[g]), rng.random()))
        for cid, g in zip((block[i] for i in rng.permutation(len(block))), slots):
            groups[g].append(cid)
    return [sorted(g, key=natural_key) for g in groups]


def carve_val(train: list[str], burden: dict[str, int], val_fraction: float, seed: int, fold: int) -> list[str]:
    """The val cases of fold ``fold``: ``val_fraction`` of its training cases (at least one),
    stratified by burden (absent: 0) and seeded by (seed, fold)."""
    n_val = max(1, int(round(len(train) * val_fraction)))
    groups = _stratified_deal(train, burden, max(2, int(round(len(train) / n_val))), np.random.default_rng([seed, fold]))
    return groups[0][:n_val]


def make_folds(case_ids: list[str], burden: dict[str, int], k: int, seed: int, val_fraction: float) -> list[dict[str, list[str]]]:
    """``k`` folds over ``case_ids``: test = one stratified group; val = ``val_fraction`` of the
    others (stratified, at least one case); train = the rest."""
    ids = sorted(set(case_ids), key=natural_key)
    if k < 2:
        raise PncdError(f"--folds {k} is invalid; use 2 or more")
    if len(ids) < 2 * k:
        raise PncdError(f"{len(ids)} case(s) are too few for {k} folds; use at most {len(ids) // 2} folds")
    if not 0.0 < val_fraction < 1.0:
        raise PncdError(f"--val-fraction {val_fraction!r} is invalid; use a fraction in (0, 1)")
    rng = np.random.default_rng(seed)
    groups = _stratified_deal(ids, burden, k, rng)
    folds = []
    for i in range(k):
        rest = [c for g, grp in enumerate(groups) if g != i for c in grp]
        val = carve_val(rest, burden, val_fraction, seed, i)
        train = [c for c in rest if c not in set(val)]
        folds.append({"train": sorted(train, key=natural_key), "val": sorted(val, key=natural_key),
                      "test": list(groups[i])})
    return folds


def folds_document(folds: list[dict[str, list[str]]], seed: int, val_fraction: float) -> dict[str, Any]:
    return {"format": FORMAT, "k": len(folds), "seed": seed, "val_fraction": val_fraction,
            "stratified_by": "lesion burden (foreground voxels per case)", "folds": folds}


def nnunet_document(folds: list[dict[str, list[str]]]) -> list[dict[str, list[str]]]:
    """nnU-Net's splits_final.json: its ``val`` is the held-out fold (pncd's ``test``)."""
    return [{"train": sorted(f["train"] + f["val"], key=natural_key), "val": list(f["test"])} for f in folds]


def read_folds(path: Path, val_fraction: float = 0.15, seed: int = 0) -> list[dict[str, list[str]]]:
    """The folds of a pncd ``folds.json`` or an nnU-Net ``splits_final.json``, checked: every
    fold names train and test cases, and no case is in two splits of one fold."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise PncdError(f"{path}: folds file not found; write one with `pncd data split DATA --folds 5`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PncdError(f"{path}: not a readable folds file ({e}); write one with `pncd data split DATA --folds 5`") from None
    if isinstance(doc, list):  # nnU-Net
        folds = []
        for i, f in enumerate(doc):
            if not isinstance(f, dict) or not isinstance(f.get("train"), list) or not isinstance(f.get("val"), list):
                raise PncdError(f"{path}: fold {i} is not {{\"train\": [...], \"val\": [...]}} (nnU-Net's splits_final.json)")
            train = [str(c) for c in f["train"]]
            val = carve_val(train, {}, val_fraction, seed, i)
            folds.append({"train": [c for c in train if c not in set(val)], "val": sorted(val, key=natural_key),
                          "test": [str(c) for c in f["val"]]})
    elif isinstance(doc, dict) and isinstance(doc.get("folds"), list):
        folds = []
        for i, f in enumerate(doc["folds"]):
            if not isinstance(f, dict) or not all(isinstance(f.get(s), list) for s in FOLD_SPLITS):
                raise PncdError(f"{path}: fold {i} must list train, val and test cases")
            folds.append({s: [str(c) for c in f[s]] for s in FOLD_SPLITS})
    else:
        raise PncdError(f"{path}: not a folds file (expected pncd's folds.json or nnU-Net's splits_final.json)")
    if not folds:
        raise PncdError(f"{path}: lists no fold")
    for i, f in enumerate(folds):
        seen: dict[str, str] = {}
        for s in FOLD_SPLITS:
            for c in f[s]:
                if c in seen:
                    raise PncdError(f"{path}: fold {i}: case {c!r} is in both {seen[c]!r} and {s!r}; a case belongs to one split")
                seen[c] = s
        if not f["train"] or not f["test"]:
            raise PncdError(f"{path}: fold {i} has no {'train' if not f['train'] else 'test'} case")
    return folds


def find_folds_file(root: Path, folds_file: str | None) -> Path:
    """The folds file a run names, else ``folds.json`` or ``splits_final.json`` beside the data."""
    if folds_file:
        return Path(folds_file)
    for name in (FOLDS_FILE, NNUNET_FILE):
        if (root / name).is_file():
            return root / name
    raise PncdError(f"{root}: no {FOLDS_FILE} or {NNUNET_FILE} beside the data; write one with "
                    f"`pncd data split {root} --folds 5`, or name one with --folds-file")


def fold_splits(root: Path, folds_file: str | None, fold: int, val_fraction: float, seed: int) -> tuple[dict[str, list[str]], str]:
    """The train/val/test case ids of fold ``fold`` and where they came from."""
    path = find_folds_file(root, folds_file)
    folds = read_folds(path, val_fraction, seed)
    if not 0 <= fold < len(folds):
        raise PncdError(f"{path}: --fold {fold} does not exist; it holds folds 0..{len(folds) - 1}")
    return {s: list(folds[fold][s]) for s in FOLD_SPLITS}, f"{path.name} fold {fold}"
