"""Bad input: one clear PncdError naming the file (load_split), every problem listed (data check)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from pncd.data import DataSpec, load_split
from pncd.data.check import check_dataset
from pncd.errors import PncdError

from data_helpers import lesion_image, save_nifti, save_png


def _load(root, **kw):
    return load_split(DataSpec(root=str(root), size=32, **kw), "all")


def _problem_files(report):
    return {p["file"].rsplit("/", 1)[-1] for p in report["problems"] if p["severity"] == "error"}


def test_corrupt_image_file(png_dataset):
    root = png_dataset(n=3)
    (root / "images/img1.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(PncdError, match=r"images/img1\.png: cannot be read as an image.*replace or remove"):
        _load(root)
    report = check_dataset(root)
    assert not report["ok"] and _problem_files(report) == {"img1.png"}
    assert report["readable_cases"] == 2


def test_truncated_nifti(tmp_path):
    vol = np.zeros((4, 16, 16), np.uint8)
    save_nifti(tmp_path / "d/images/p.nii.gz", vol)
    save_nifti(tmp_path / "d/labels/p.nii.gz", vol)
    data = (tmp_path / "d/labels/p.nii.gz").read_bytes()
    (tmp_path / "d/labels/p.nii.gz").write_bytes(gzip.compress(gzip.decompress(data)[:400]))
    with pytest.raises(PncdError, match=r"labels/p\.nii\.gz: cannot be read as NIfTI"):
        _load(tmp_path / "d")


def test_image_without_mask_and_mask_without_image(png_dataset):
    root = png_dataset(n=5)  # 3 cases stay paired: enough for a seeded train/val/test split
    (root / "labels/img1.png").unlink()
    (root / "images/img3.png").unlink()
    with pytest.raises(PncdError, match=r"2 problem\(s\).*img1\.png: image without mask.*img3\.png: mask without image"):
        _load(root)
    report = check_dataset(root)
    assert _problem_files(report) == {"img1.png", "img3.png"} and report["errors"] == 2


def test_size_mismatch(tmp_path):
    img, _ = lesion_image(20, 20, (2, 6, 2, 6))
    _, mask = lesion_image(24, 20, (2, 6, 2, 6))
    save_png(tmp_path / "d/images/a.png", img)
    save_png(tmp_path / "d/labels/a.png", mask)
    with pytest.raises(PncdError, match=r"images/a\.png and .*labels/a\.png: image is 20x20 but mask is 24x20"):
        _load(tmp_path / "d")
    report = check_dataset(tmp_path / "d")
    assert _problem_files(report) == {"a.png", "d"}  # d: its one case leaves the val split empty
    assert any(p["file"].endswith("/d") and "split 'val' has no cases" in p["message"] for p in report["problems"])


def test_empty_data_set(tmp_path):
    (tmp_path / "d/images").mkdir(parents=True)
    (tmp_path / "d/labels").mkdir()
    with pytest.raises(PncdError, match=r"d: 1 problem\(s\).*no image/mask pairs found; the data set is empty"):
        _load(tmp_path / "d")
    assert not check_dataset(tmp_path / "d")["ok"]


def test_labels_out_of_range(tmp_path):
    img, mask = lesion_image(16, 16, (2, 6, 2, 6))
    for name in "abc":  # 3 cases: a seeded train/val/test split
        save_png(tmp_path / f"d/images/{name}.png", img)
        save_png(tmp_path / f"d/labels/{name}.png", mask * 3 if name == "a" else mask)  # a: values 0 and 3
    with pytest.raises(PncdError, match=r"labels/a\.png: mask values \[0, 3\].*< num_classes=3"):
        _load(tmp_path / "d", num_classes=3)
    report = check_dataset(tmp_path / "d", num_classes=3)
    assert report["problems"][0]["message"].startswith("mask values [0, 3]")
    assert check_dataset(tmp_path / "d", num_classes=4)["ok"]


def test_no_recognisable_layout(tmp_path):
    (tmp_path / "d/pictures").mkdir(parents=True)
    with pytest.raises(PncdError, match=r"d: no data set found; expected images/ with labels/"):
        _load(tmp_path / "d")
    (tmp_path / "e/images").mkdir(parents=True)
    with pytest.raises(PncdError, match=r"images/ has no labels/ \(or masks/\)"):
        _load(tmp_path / "e")


def test_unsupported_files_are_warnings_not_errors(png_dataset):
    root = png_dataset(n=3)
    (root / "images/notes.txt").write_text("hello")
    report = check_dataset(root)
    assert report["ok"] and report["warnings"] == 1
    assert len(_load(root)) == 3


def test_nnunet_missing_channel_suffix(tmp_path):
    root = tmp_path / "Dataset003"
    img, mask = lesion_image(16, 16, (2, 6, 2, 6))
    save_png(root / "imagesTr/a_0000.png", img)
    save_png(root / "imagesTr/b.png", img)
    save_png(root / "labelsTr/a.png", mask)
    save_png(root / "labelsTr/b.png", mask)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "x"}, "labels": {"background": 0, "y": 1},
                                                   "numTraining": 2, "file_ending": ".png"}))
    with pytest.raises(PncdError, match=r"imagesTr/b\.png: nnU-Net image name lacks the channel suffix"):
        _load(root)
