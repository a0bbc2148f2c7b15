"""Mask values are checked against the declared classes, and a NIfTI's 4th axis is read only as
the data set declares: a 0/1 mask with a stray 255 (read before as 0/255, thresholded at 128: a
43-voxel lesion became 1 voxel) and a 4-D volume with 3 time points (read before as RGB and turned
to gray) are errors naming the file and what was found, in ``data check`` and in ``train``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pncd.data.readers import read_image, read_mask, to_labels
from pncd.errors import PncdError
from tests.faults.fault_helpers import TINY, one_error, siblings
from tests.helpers import run_cli


def _nifti(path: Path, xyz: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(xyz, np.eye(4)), str(path))
    return path


def _copy(tiny_data: Path, tmp_path: Path, name: str) -> tuple[Path, str]:
    root = tmp_path / name
    shutil.copytree(tiny_data, root)
    return root, json.loads((root / "splits.json").read_text())["train"][0]


def _stray_255(root: Path, case: str) -> Path:
    """The case's 0/1 mask with one voxel set to 255 (its lesion stays 1)."""
    import nibabel as nib

    path = root / "labels" / f"{case}.nii.gz"
    lab = np.asarray(nib.load(str(path)).dataobj).astype(np.uint8)
    assert set(np.unique(lab)) == {0, 1} and (lab == 1).sum() > 1
    lab[0, 0, 0] = 255
    return _nifti(path, lab)


def test_stray_255_in_a_0_1_mask_is_refused_naming_the_values(tmp_path):
    lab = np.zeros((1, 16, 16), np.uint8)
    lab[0, 4:10, 4:11] = 1  # a 42-pixel lesion
    lab[0, 0, 0] = 255
    with pytest.raises(PncdError) as e:
        to_labels(lab, 2, Path("p7.nii.gz"))
    msg = str(e.value)
    assert msg.startswith("p7.nii.gz: mask values [0, 1, 255]") and "42 pixel(s) at 1" in msg and "\n" not in msg
    # the same values through a file on disk
    path = _nifti(tmp_path / "p7.nii.gz", lab.transpose(2, 1, 0))
    with pytest.raises(PncdError, match=re.escape(str(path)) + r": mask values \[0, 1, 255\]"):
        read_mask(path, 2)


@pytest.mark.parametrize("stored, expected", [
    ([[0, 1], [1, 0]], [[0, 1], [1, 0]]),  # 0/1
    ([[0, 255], [255, 0]], [[0, 1], [1, 0]]),  # 0/255
    ([[0, 128], [0, 0]], [[0, 1], [0, 0]]),  # 0/128
    ([[0, 200], [127, 128]], [[0, 1], [0, 1]]),  # graded: levels on both sides of 128
    ([[255, 255], [255, 0]], [[1, 1], [1, 0]]),
])
def test_binary_encodings_that_are_right_are_kept(stored, expected):
    assert to_labels(np.array(stored, np.uint8)[None], 2, Path("m.png")).tolist() == [expected]
    assert to_labels(np.array(stored, np.uint16)[None] * (257 if max(map(max, stored)) > 1 else 1), 2,
                     Path("m.png")).tolist() == [expected]


@pytest.mark.parametrize("stored", [
    [[0, 1], [255, 1]],  # labels with a stray 255
    [[0, 2], [255, 2]],  # another 3-level mask
    [[0, 1], [1, 1], [200, 255]],  # graded, but most marked pixels below the threshold
])
def test_mixed_encodings_are_refused(stored):
    with pytest.raises(PncdError, match=r"m\.png: mask values .* are neither labels 0\.\.1"):
        to_labels(np.array(stored, np.uint8)[None], 2, Path("m.png"))


def test_an_antialiased_mask_is_still_thresholded():
    from PIL import Image

    yy, xx = np.mgrid[:100, :100]
    mask = (((yy - 50) ** 2 + (xx - 47) ** 2) < 30 ** 2).astype(np.uint8) * 255
    small = np.asarray(Image.fromarray(mask).resize((37, 37), Image.BILINEAR))
    assert 1 in np.unique(small) and len(np.unique(small)) > 10  # values 0..255, 1 among them
    assert np.array_equal(to_labels(small[None], 2, Path("m.png"))[0], small >= 128)


def test_data_check_and_train_refuse_a_stray_255(tiny_data, tmp_path):
    root, case = _copy(tiny_data, tmp_path, "data")
    bad = _stray_255(root, case)
    p = run_cli("data", "check", root)
    assert p.returncode == 1 and "problems      none" not in p.stdout, p.stdout
    assert re.search(re.escape(f"{bad}: mask values [0, 1, 255]"), p.stdout), p.stdout
    out = tmp_path / "run"
    line = one_error(run_cli("train", "--model", "enet", "--data", root, "--epochs", "1", "--out", out, *TINY), 2)
    assert str(bad) in line and "[0, 1, 255]" in line
    assert not out.exists() and siblings(out) == []


def _time_series(root: Path, case: str) -> Path:
    """The case's image as 4-D: its volume at 3 time points (x, y, slices, t)."""
    import nibabel as nib

    path = root / "images" / f"{case}.nii.gz"
    vol = np.asarray(nib.load(str(path)).dataobj).astype(np.float32)
    return _nifti(path, np.stack([vol, vol * 1.1, vol * 0.9], axis=-1))


def test_a_4d_nifti_is_refused_naming_its_shape(tiny_data, tmp_path):
    root, case = _copy(tiny_data, tmp_path, "data")
    bad = _time_series(root, case)
    with pytest.raises(PncdError, match=re.escape(f"{bad}: NIfTI shape (32, 32, 4, 3)") + ".*time points"):
        read_image((bad,))
    p = run_cli("data", "check", root)
    assert p.returncode == 1 and f"{bad}: NIfTI shape (32, 32, 4, 3)" in p.stdout, p.stdout
    out = tmp_path / "run"
    line = one_error(run_cli("train", "--model", "enet", "--data", root, "--epochs", "1", "--out", out, *TINY), 2)
    assert str(bad) in line and "(32, 32, 4, 3)" in line and "channel_names" in line
    assert not out.exists()


def test_a_4d_nifti_is_read_as_channels_where_the_layout_declares_them(tiny_data, tmp_path):
    from pncd.data import DataSpec, clear_cache, load_split

    root, case = _copy(tiny_data, tmp_path, "data")
    for c in json.loads((root / "splits.json").read_text())["train"]:
        _time_series(root, c)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "t0", "1": "t1", "2": "t2"}}))
    clear_cache()
    s = load_split(DataSpec(root=str(root), size=32, channels=3), "train")
    assert s.images.shape[1] == 3
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "t0", "1": "t1"}}))
    clear_cache()
    with pytest.raises(PncdError, match=r"\(32, 32, 4, 3\).*declares 2 channels"):
        load_split(DataSpec(root=str(root), size=32, channels=3), "train")
