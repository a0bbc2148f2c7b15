"""bench/experiments/lgg_webp_pack.py: the pack that carries LGG to a GPU machine decodes back to
the volumes it was made from (exactly, or to 7 bits with --drop-bits 1), cut to a byte budget
by leaving out training patients only, in the layout pncd reads."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tests.helpers import experiment

PATIENTS = {"train": ["p0", "p1", "p2"], "val": ["p3"], "test": ["p4"]}


@pytest.fixture()
def source(tmp_path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    rng = np.random.default_rng(0)
    vols = {}
    for names in PATIENTS.values():
        for name in names:
            img = rng.integers(0, 256, size=(40, 32, 3), dtype=np.uint8)  # (x, y, slices), not square
            lab = (img > 200).astype(np.uint8)
            nib.save(nib.Nifti1Image(img, np.eye(4)), src / "images" / f"{name}.nii.gz")
            nib.save(nib.Nifti1Image(lab, np.eye(4)), src / "labels" / f"{name}.nii.gz")
            vols[name] = (img, lab)
    (src / "splits.json").write_text(json.dumps(PATIENTS))
    return src, vols


def _read(path):
    return np.asarray(nib.load(path).dataobj)


@pytest.mark.parametrize("drop_bits", [0, 1])
def test_round_trip(source, tmp_path, drop_bits):
    src, vols = source
    pack = experiment("lgg_webp_pack")
    pack.pack(src, tmp_path / "pack", budget_mb=100.0, seed=0, drop_bits=drop_bits)
    pack.unpack(tmp_path / "pack", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "splits.json").read_text()) == PATIENTS
    for name, (img, lab) in vols.items():
        got = _read(tmp_path / "out" / "images" / f"{name}.nii")
        assert got.dtype == np.uint8 and got.shape == img.shape
        np.testing.assert_array_equal(got, img if drop_bits == 0 else img & 0xFE)
        np.testing.assert_array_equal(_read(tmp_path / "out" / "labels" / f"{name}.nii"), lab)


def test_budget_leaves_out_training_patients_only(source, tmp_path):
    src, _ = source
    pack = experiment("lgg_webp_pack")
    full = tmp_path / "full"
    pack.pack(src, full, budget_mb=100.0, seed=0, drop_bits=0)
    per_patient = json.loads((full / "pack.json").read_text())["bytes"] / 5
    # room for val, test and about one training patient
    pack.pack(src, tmp_path / "cut", budget_mb=3.3 * per_patient / 1e6, seed=0, drop_bits=0)
    record = json.loads((tmp_path / "cut" / "pack.json").read_text())
    splits = json.loads((tmp_path / "cut" / "splits.json").read_text())
    assert splits["val"] == PATIENTS["val"] and splits["test"] == PATIENTS["test"]
    assert 0 < len(splits["train"]) < 3
    assert sorted(splits["train"] + record["train_dropped"]) == PATIENTS["train"]
    assert record["bytes"] <= record["budget_mb"] * 1e6
