"""Case-level splits: from splits.json, from a seed, and 2-D images grouped into cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pncd.data import DataSpec, load_split
from pncd.data.splits import seeded_split
from pncd.errors import PncdError

from data_helpers import lesion_image, save_png


def test_splits_from_file(png_dataset):
    root = png_dataset(n=6, splits={"train": ["img0", "img1", "img2"], "val": ["img4"], "test": ["img5", "img3"]})
    spec = DataSpec(root=str(root), size=32)
    assert load_split(spec, "train").cases() == ["img0", "img1", "img2"]
    assert load_split(spec, "val").cases() == ["img4"]
    assert load_split(spec, "test").cases() == ["img5", "img3"]  # file order kept
    assert len(load_split(spec, "all")) == 6


def test_seeded_split_is_deterministic_disjoint_and_covers_all():
    ids = [f"c{i}" for i in range(20)]
    a = seeded_split(ids, seed=3, val_fraction=0.15, test_fraction=0.15)
    assert a == seeded_split(list(reversed(ids)), seed=3, val_fraction=0.15, test_fraction=0.15)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (14, 3, 3)
    sets = [set(a[k]) for k in ("train", "val", "test")]
    assert set.union(*sets) == set(ids) and sum(map(len, sets)) == len(ids)
    b = seeded_split(ids, seed=4, val_fraction=0.15, test_fraction=0.15)
    assert a != b  # another seed gives another split
    small = seeded_split(["a", "b", "c"], seed=0, val_fraction=0.15, test_fraction=0.15)
    assert [len(small[k]) for k in ("train", "val", "test")] == [1, 1, 1]


def test_seed_split_without_splits_json_is_case_disjoint(synthetic_root, tmp_path):
    # A copy of the synthetic volumes without its splits.json: split by seed, by case.
    import shutil

    root = tmp_path / "nosplits"
    shutil.copytree(synthetic_root, root)
    (root / "splits.json").unlink()
    spec = DataSpec(root=str(root), size=32, split_seed=1)
    parts = {k: load_split(spec, k) for k in ("train", "val", "test")}
    cases = {k: set(v.cases()) for k, v in parts.items()}
    assert not (cases["train"] & cases["val"]) and not (cases["train"] & cases["test"]) and not (cases["val"] & cases["test"])
    assert sum(len(v) for v in parts.values()) == 8 * 6  # every slice of every case, once
    again = load_split(DataSpec(root=str(root), size=32, split_seed=1), "val")
    assert again.cases() == parts["val"].cases()
    for v in parts.values():  # all slices of a case stay together
        for c in v.cases():
            assert sum(1 for x in v.case_ids if x == c) == 6


def test_2d_images_grouped_into_cases_named_by_splits(tmp_path):
    root = tmp_path / "d"
    for patient in ("P1", "P2"):
        for z in (1, 2, 10):  # natural order: 1, 2, 10
            img, mask = lesion_image(16, 16, (z % 8, z % 8 + 4, 2, 6))
            save_png(root / "images" / f"{patient}_{z}.png", img)
            save_png(root / "labels" / f"{patient}_{z}_mask.png", mask)
    (root / "splits.json").write_text(json.dumps({"train": ["P1"], "val": ["P2"], "test": []}))
    s = load_split(DataSpec(root=str(root), size=16), "val")
    assert s.case_ids == ["P2"] * 3 and s.slice_index == [0, 1, 2]
    assert [src.rsplit("/", 1)[1] for src in s.sources] == ["P2_1.png", "P2_2.png", "P2_10.png"]
    with pytest.raises(PncdError, match="split 'test' has no cases"):
        load_split(DataSpec(root=str(root), size=16), "test")


def test_case_in_splits_json_missing_on_disk(png_dataset):
    root = png_dataset(n=3, splits={"train": ["img0", "img1"], "val": ["ghost"], "test": ["img2"]})
    with pytest.raises(PncdError, match=r"splits\.json: 1 listed case\(s\) have no image/mask pair on disk: ghost \(val\)"):
        load_split(DataSpec(root=str(root), size=32), "train")


def test_case_in_two_splits_is_refused(png_dataset):
    root = png_dataset(n=3, splits={"train": ["img0", "img1"], "val": ["img1"], "test": ["img2"]})
    with pytest.raises(PncdError, match=r"splits\.json: case 'img1' is listed in both 'train' and 'val'"):
        load_split(DataSpec(root=str(root), size=32), "train")


def test_synthetic_splits_are_case_disjoint(synthetic_root):
    spec = DataSpec(root=str(synthetic_root), size=64)
    ids = {k: load_split(spec, k).cases() for k in ("train", "val", "test")}
    assert [len(v) for v in ids.values()] == [6, 1, 1]
    assert len(set(np.concatenate(list(ids.values())))) == 8
