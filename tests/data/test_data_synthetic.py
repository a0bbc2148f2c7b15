"""The synthetic data set: determinism, realism checks, atomic generation, the cached default."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pncd.data import DataSpec, load_split, resolve_root
from pncd.data import synthetic
from pncd.errors import PncdError


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, synthetic_root):
    again = synthetic.generate(tmp_path / "again", n_cases=8, n_slices=6, size=64, seed=0)
    assert _digest(again) == _digest(synthetic_root)
    assert len(_digest(again)) == 2 * 8 + 3  # images, labels, splits.json, synthetic.json, .pncd-owned.json
    other = synthetic.generate(tmp_path / "other", n_cases=8, n_slices=6, size=64, seed=1)
    a = np.asarray(nib.load(str(synthetic_root / "images/synth_000.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(other / "images/synth_000.nii.gz")).dataobj)
    assert a.shape == b.shape == (64, 64, 6) and not np.array_equal(a, b)


def test_lesion_is_hyperintense_but_overlaps_other_tissue(synthetic_root):
    imgs, labs = [], []
    for p in sorted((synthetic_root / "images").glob("*.nii.gz")):
        imgs.append(np.asarray(nib.load(str(p)).dataobj).astype(float))
        labs.append(np.asarray(nib.load(str(synthetic_root / "labels" / p.name)).dataobj))
    img, lab = np.concatenate(imgs, axis=2), np.concatenate(labs, axis=2).astype(bool)
    tissue = (img > 60) & ~lab  # inside the head, not lesion
    assert img[lab].mean() > img[tissue].mean() + 40  # clearly brighter on average (FLAIR-like)
    assert np.percentile(img[lab], 5) < np.percentile(img[tissue], 99)  # but not separable by a threshold
    assert 0.002 < lab.mean() < 0.1  # a lesion, not the whole image


def test_lesion_varies_across_slices_and_some_slices_are_empty(synthetic_root):
    s = load_split(DataSpec(root=str(synthetic_root), size=64), "all")
    areas = s.masks.reshape(8, 6, -1).sum(axis=2)  # (case, slice)
    assert (areas.max(axis=1) > 0).all()  # every case has a lesion somewhere
    assert (areas == 0).any()  # some slices have none
    assert (areas.max(axis=1) > areas.min(axis=1)).all()  # its size changes through the volume


def test_generator_failing_midway_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic._save_nifti

    def flaky(arr, path):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full (simulated)")
        real(arr, path)

    monkeypatch.setattr(synthetic, "_save_nifti", flaky)
    with pytest.raises(OSError, match="simulated"):
        synthetic.generate(tmp_path / "out", n_cases=4, n_slices=2, size=32)
    assert list(tmp_path.iterdir()) == []  # neither out/ nor a temporary directory


def test_existing_directory_needs_force(tmp_path):
    out = synthetic.generate(tmp_path / "s", n_cases=2, n_slices=2, size=32)
    (out / "marker").write_text("old")
    with pytest.raises(PncdError, match="already exists.*--force"):
        synthetic.generate(out, n_cases=2, n_slices=2, size=32)
    synthetic.generate(out, n_cases=3, n_slices=2, size=32, force=True)
    # --force replaces what pncd wrote (images/ with 3 cases now) and keeps the user's file
    assert (out / "marker").read_text() == "old" and len(list((out / "images").iterdir())) == 3


def test_force_refuses_a_folder_pncd_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    (mine / "images").mkdir(parents=True)
    (mine / "images" / "scan.png").write_text("a user's image")
    with pytest.raises(PncdError, match="not written by pncd"):
        synthetic.generate(mine, n_cases=2, n_slices=2, size=32, force=True)
    assert [p.name for p in mine.rglob("*")] == ["images", "scan.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_resolve_root_none_builds_default_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PNCD_CACHE", str(tmp_path / "cache"))
    t0 = time.perf_counter()
    root = resolve_root(None)
    elapsed = time.perf_counter() - t0
    assert root == tmp_path / "cache" / "synthetic-v1"
    assert elapsed < 15  # about 2 s on a quiet core; the budget is 5 s
    assert len(list((root / "images").glob("*.nii.gz"))) == 24
    stamp = (root / "splits.json").stat().st_mtime_ns
    assert resolve_root(None) == root and (root / "splits.json").stat().st_mtime_ns == stamp  # cached
    s = load_split(DataSpec(size=32), "val")  # root=None -> the cached default
    assert len(s.cases()) == 4 and len(s) == 32
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["synthetic-v1"]  # no temporary left


def test_synthetic_root_with_other_case_counts_has_its_own_folder(tmp_path, monkeypatch):
    """``pncd demo --cases N``'s data: the default's generator with N cases, cached beside it;
    case i is the same phantom whatever N is (each case has its own seeded generator)."""
    from pncd.data.loading import synthetic_root

    monkeypatch.setenv("PNCD_CACHE", str(tmp_path / "cache"))
    root = synthetic_root(6)
    assert root == tmp_path / "cache" / "synthetic-v1-6cases"
    assert len(list((root / "images").glob("*.nii.gz"))) == 6
    default = synthetic_root()
    assert default == tmp_path / "cache" / "synthetic-v1" and len(list((default / "images").glob("*.nii.gz"))) == 24
    assert (root / "images" / "synth_000.nii.gz").read_bytes() == (default / "images" / "synth_000.nii.gz").read_bytes()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["synthetic-v1", "synthetic-v1-6cases"]


def test_resolve_root_missing_directory(tmp_path):
    with pytest.raises(PncdError, match="nope: data set directory not found"):
        resolve_root(str(tmp_path / "nope"))
