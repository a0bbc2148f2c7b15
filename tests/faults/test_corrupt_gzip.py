"""A .nii.gz whose gzip trailer is cut or whose compressed data has a flipped bit reads as valid
to nibabel (it stops reading once it has the voxels), so every reader checks the whole gzip
stream (CRC-32 and length): the file is refused in one line that names it, in pncd data check,
train and eval alike; the intact file still reads."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pncd.data.readers import read_raw
from pncd.errors import PncdError
from tests.faults.fault_helpers import TINY, one_error, siblings
from tests.helpers import run_cli

CORRUPT = r"is corrupt \(the gzip CRC/length check failed: .+\); re-copy or re-convert it"


def _nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    vol = np.random.default_rng(0).integers(0, 255, (24, 20, 5)).astype(np.uint8)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    return vol


def _cut(path: Path, n: int) -> Path:
    path.write_bytes(path.read_bytes()[:-n])
    return path


def _flip(path: Path, offset: int | None = None, bit: int = 0x10) -> Path:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= bit
    path.write_bytes(bytes(data))
    return path


def test_intact_cut_and_flipped_files(tmp_path):
    good = tmp_path / "good.nii.gz"
    vol = _nifti(good)
    raw, _ = read_raw(good)
    assert np.array_equal(raw, vol.transpose(2, 1, 0))
    bad = []
    for name, damage in (("cut4", lambda p: _cut(p, 4)), ("cut8", lambda p: _cut(p, 8)),
                         ("flip-payload", _flip), ("flip-crc", lambda p: _flip(p, offset=-6, bit=0x01))):
        p = tmp_path / f"{name}.nii.gz"
        shutil.copyfile(good, p)
        damage(p)
        bad.append(p)
    for p in bad:
        with pytest.raises(PncdError, match=re.escape(str(p)) + ": the file " + CORRUPT):
            read_raw(p)


def test_uncompressed_nii_and_misnamed_gz_still_read(tmp_path):
    good = tmp_path / "a.nii"
    vol = _nifti(good)
    assert np.array_equal(read_raw(good)[0], vol.transpose(2, 1, 0))
    plain = tmp_path / "b.nii.gz"  # not gzip-compressed at all, only named so
    shutil.copyfile(good, plain)
    assert np.array_equal(read_raw(plain)[0], vol.transpose(2, 1, 0))


def _damaged_copy(tiny_data: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    splits = json.loads((root / "splits.json").read_text())
    image = _flip(root / "images" / f"{splits['train'][0]}.nii.gz")
    label = _cut(root / "labels" / f"{splits['test'][0]}.nii.gz", 8)
    return root, image, label


def test_data_check_train_and_eval_refuse_the_damaged_files(tiny_data, tiny_run, tmp_path):
    root, image, label = _damaged_copy(tiny_data, tmp_path)
    p = run_cli("data", "check", root)
    assert p.returncode == 1 and "2 error(s)" in p.stdout, p.stdout
    for f in (image, label):
        assert re.search(re.escape(str(f)) + ": the file " + CORRUPT, p.stdout), p.stdout
    out = tmp_path / "run"
    line = one_error(run_cli("train", "--model", "enet", "--data", root, "--out", out, "--epochs", "1", *TINY), 2)
    assert re.search(re.escape(str(image)) + ": the file " + CORRUPT, line), line
    assert not out.exists() and siblings(out) == []
    ev = tmp_path / "ev"
    line = one_error(run_cli("eval", tiny_run, "--data", root, "--split", "test", "--out", ev), 2)
    assert str(label) in line and "is corrupt" in line
    assert not ev.exists()
