"""Readers for every supported format, and the mask conventions of public data sets."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pncd.data import DataSpec, load_split
from pncd.data.readers import read_image, read_mask, to_labels
from pncd.errors import PncdError

from data_helpers import lesion_image, save_nifti, save_png


def _one(root: Path, size: int, channels: int = 1, num_classes: int = 2, split: str = "all"):
    return load_split(DataSpec(root=str(root), size=size, channels=channels, num_classes=num_classes), split)


def test_png_gray_pairs_by_stem_and_each_image_is_a_case(png_dataset):
    root = png_dataset(n=5)
    s = _one(root, size=40)
    assert s.images.shape == (5, 1, 40, 40) and s.masks.shape == (5, 40, 40)
    assert s.cases() == [f"img{i}" for i in range(5)]
    assert s.slice_index == [0] * 5
    assert s.sources[2].endswith("images/img2.png")
    assert set(np.unique(s.masks)) == {0, 1}


def test_png_rgb_to_gray_and_to_three_channels(tmp_path):
    img, mask = lesion_image(32, 32, (8, 16, 8, 16), rgb=True)
    save_png(tmp_path / "d/images/a.png", img)
    save_png(tmp_path / "d/labels/a.png", mask * 255)
    gray = read_image((tmp_path / "d/images/a.png",))
    assert gray.shape == (1, 32, 32, 3)
    s1 = _one(tmp_path / "d", 32, channels=1)
    s3 = _one(tmp_path / "d", 32, channels=3)
    assert s1.images.shape == (1, 1, 32, 32) and s3.images.shape == (1, 3, 32, 32)
    # The three RGB channels differ, so the 3-channel version keeps them apart.
    assert not np.allclose(s3.images[0, 0], s3.images[0, 2])
    # Lesion (bright) is brighter than the background after gray conversion and z-scoring.
    assert s1.images[0, 0][s1.masks[0] == 1].min() > s1.images[0, 0][s1.masks[0] == 0].max()


def test_gray_repeated_to_three_channels(png_dataset):
    s = _one(png_dataset(n=1), size=40, channels=3)
    assert np.array_equal(s.images[0, 0], s.images[0, 1]) and np.array_equal(s.images[0, 0], s.images[0, 2])


def test_jpeg_mask_with_compression_noise_is_thresholded(tmp_path):
    img, mask = lesion_image(48, 48, (10, 30, 12, 36))
    save_png(tmp_path / "d/images/a.jpg", img, quality=60)
    save_png(tmp_path / "d/labels/a.jpg", mask * 255, quality=60)
    raw = np.asarray(Image.open(tmp_path / "d/labels/a.jpg"))
    assert len(np.unique(raw)) > 2, "JPEG should have added noise for this test to mean anything"
    s = _one(tmp_path / "d", 48)
    assert set(np.unique(s.masks)) == {0, 1}
    agreement = (s.masks[0] == mask).mean()
    assert agreement > 0.99


def test_tiff_16bit_and_multipage(tmp_path):
    img = (np.arange(30 * 20, dtype=np.uint16).reshape(30, 20) * 50)
    save_png(tmp_path / "d/images/a.tif", img)
    save_png(tmp_path / "d/labels/a.tif", (img > 15000).astype(np.uint8))
    x = read_image((tmp_path / "d/images/a.tif",))
    assert x.shape == (1, 30, 20, 1) and x.max() == img.max()
    # A multi-page TIFF is read as one slice per page.
    pages = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 1, 1)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    m = read_mask(tmp_path / "stack.tif", 2)
    assert m.shape == (3, 8, 8) and m[:, 0, 0].tolist() == [0, 1, 1]
    s = _one(tmp_path / "d", 16)
    assert s.images.shape == (1, 1, 16, 16)


def test_bmp(tmp_path):
    img, mask = lesion_image(24, 24, (4, 12, 4, 12))
    save_png(tmp_path / "d/images/a.bmp", img)
    save_png(tmp_path / "d/masks/a.bmp", mask * 255)  # masks/ is accepted in place of labels/
    s = _one(tmp_path / "d", 24)
    assert s.masks[0].sum() == 64


def test_nifti_slices_are_transposed_to_rows_and_columns(tmp_path):
    # An asymmetric pattern: row 2 bright in slice 1 only, stored the NIfTI (x, y, z) way.
    vol = np.zeros((3, 16, 12), np.uint8)  # (slices, rows, cols)
    vol[1, 2, :] = 200
    lab = (vol > 0).astype(np.uint8)
    save_nifti(tmp_path / "d/images/p1.nii.gz", vol)
    save_nifti(tmp_path / "d/labels/p1.nii.gz", lab)
    import nibabel as nib

    stored = np.asarray(nib.load(str(tmp_path / "d/images/p1.nii.gz")).dataobj)
    assert stored.shape == (12, 16, 3)  # x = column first
    raw = read_image((tmp_path / "d/images/p1.nii.gz",))
    assert raw.shape == (3, 16, 12, 1) and np.array_equal(raw[1, 2, :, 0], np.full(12, 200))
    s = _one(tmp_path / "d", 16)
    assert s.cases() == ["p1"] and s.slice_index == [0, 1, 2]
    assert s.masks[1].sum() > 0 and s.masks[0].sum() == 0
    # Image and mask come out aligned: the mask's rows are the image's bright rows.
    assert np.array_equal(s.masks[1].any(axis=1), s.images[1, 0].max(axis=1) > 0)


def test_nnunet_raw_layout_with_dataset_json(tmp_path):
    root = tmp_path / "Dataset001_Test"
    for cid in ("case_a", "case_b", "case_c"):
        vol = np.zeros((2, 20, 20), np.uint8)
        vol[:, 5:10, 5:10] = 100
        vol[:, 12:15, 12:15] = 200
        lab = np.zeros_like(vol)
        lab[:, 5:10, 5:10] = 1
        lab[:, 12:15, 12:15] = 2
        save_nifti(root / "imagesTr" / f"{cid}_0000.nii.gz", vol)
        save_nifti(root / "labelsTr" / f"{cid}.nii.gz", lab)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR"}, "labels": {"background": 0, "edema": 1, "core": 2},
        "numTraining": 3, "file_ending": ".nii.gz"}))
    s = load_split(DataSpec(root=str(root), size=20, num_classes=3), "all")
    assert s.cases() == ["case_a", "case_b", "case_c"] and len(s) == 6
    assert set(np.unique(s.masks)) == {0, 1, 2}
    with pytest.raises(PncdError, match=r"dataset\.json.*3 classes.*num_classes=3"):
        load_split(DataSpec(root=str(root), size=20, num_classes=2), "all")


def test_nnunet_png_with_channel_files(tmp_path):
    root = tmp_path / "Dataset002_Rgb"
    img, mask = lesion_image(16, 16, (2, 8, 2, 8), rgb=True)
    for cid in ("x1", "x2", "x3"):
        for c in range(3):
            save_png(root / "imagesTr" / f"{cid}_{c:04d}.png", np.ascontiguousarray(img[..., c]))
        save_png(root / "labelsTr" / f"{cid}.png", mask)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "thing": 1},
        "numTraining": 3, "file_ending": ".png"}))
    s = load_split(DataSpec(root=str(root), size=16, channels=3), "all")
    assert s.images.shape == (3, 3, 16, 16)
    # Channels stay in _0000, _0001, _0002 order: R is the brightest in the lesion.
    les = s.masks[0] == 1
    assert np.all(s.images[0, 0][les] > s.images[0, 2][les])


@pytest.mark.parametrize(
    "stored, expected",
    [
        (np.array([[0, 1], [1, 0]], np.uint8), [[0, 1], [1, 0]]),  # 0/1
        (np.array([[0, 255], [255, 0]], np.uint8), [[0, 1], [1, 0]]),  # 0/255
        (np.array([[0, 65535], [0, 0]], np.uint16), [[0, 1], [0, 0]]),  # 16-bit coded
        (np.array([[0.1, 0.9], [0.6, 0.2]], np.float32), [[0, 1], [1, 0]]),  # probability map
        (np.array([[0, 200], [127, 128]], np.uint8), [[0, 1], [0, 1]]),  # half-range threshold
    ],
)
def test_binary_mask_conventions(stored, expected):
    out = to_labels(stored[None], 2, Path("m.png"))
    assert out.tolist() == [expected]


def test_three_channel_masks():
    gray3 = np.repeat(np.array([[0, 255], [0, 0]], np.uint8)[..., None], 3, axis=-1)
    assert to_labels(gray3[None], 2, Path("m.png")).tolist() == [[[0, 1], [0, 0]]]
    red_on_black = np.zeros((2, 2, 3), np.uint8)
    red_on_black[1, 1] = (255, 0, 0)
    assert to_labels(red_on_black[None], 2, Path("m.png")).tolist() == [[[0, 0], [0, 1]]]
    with pytest.raises(PncdError, match=r"m\.png.*colour-coded"):
        to_labels(red_on_black[None], 3, Path("m.png"))


def test_class_label_masks_and_out_of_range():
    labels = np.array([[0, 1], [2, 3]], np.uint8)[None]
    assert to_labels(labels, 4, Path("m.png")).tolist() == labels.tolist()
    with pytest.raises(PncdError, match=r"seg\.png: mask values \[0, 1, 2, 3\].*< num_classes=3"):
        to_labels(labels, 3, Path("seg.png"))
    with pytest.raises(PncdError, match=r"seg\.png.*do not fit num_classes=2.*num_classes to 4"):
        to_labels(labels, 2, Path("seg.png"))
    with pytest.raises(PncdError, match=r"JPEG"):
        to_labels(labels, 4, Path("seg.jpg"), lossy=True)


def test_palette_png_mask_keeps_indices(tmp_path):
    p = Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8), mode="P")
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    p.save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png", 3).tolist() == [[[0, 1], [2, 0]]]


def test_mask_with_suffix_is_paired(tmp_path):
    img, mask = lesion_image(16, 16, (2, 6, 2, 6))
    save_png(tmp_path / "d/images/a.png", img)
    save_png(tmp_path / "d/labels/a_mask.png", mask)
    s = _one(tmp_path / "d", 16)
    assert s.cases() == ["a"] and s.masks.sum() == 16


def test_jpeg_image_bytes_are_read_via_pillow(tmp_path):
    # Sanity: a real JPEG file (not a PNG renamed) so the lossy path is exercised.
    img, _ = lesion_image(16, 16, (2, 6, 2, 6))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG")
    (tmp_path / "a.jpg").write_bytes(buf.getvalue())
    assert Image.open(tmp_path / "a.jpg").format == "JPEG"
    assert read_image((tmp_path / "a.jpg",)).shape == (1, 16, 16, 1)
