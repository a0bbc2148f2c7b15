"""Reading image and mask files into arrays, and the mask conventions pncd accepts.

Every reader returns slices first, ``(S, H, W)`` or ``(S, H, W, C)``, rows before columns:

- 2-D images (PNG, JPEG, TIFF, BMP) through Pillow: one slice (multi-page TIFF: one per page).
  Grayscale and 16-bit modes stay one channel; palette, RGBA and other colour modes become RGB
  (a palette *mask* keeps its palette indices, which are its labels).
- NIfTI volumes (``.nii``, ``.nii.gz``) through nibabel, cut along the last axis. NIfTI stores
  axes as (x = column, y = row, z = slice), so slice ``z`` is ``vol[:, :, z].T``; images and
  masks are cut the same way, so they stay aligned. A 4th axis (NIfTI's time axis) is read as
  channels only where the data set declares that many channels per file (``channels``, from
  the layout: :class:`pncd.data.layout.Item`); otherwise a 4-D volume is refused, naming the
  file and its shape, rather than guessed at (3 time points are not RGB). A ``.nii.gz`` is decompressed whole first,
  its gzip CRC-32 and length checked (:func:`gunzip_checked`): a file cut short or with a
  flipped bit is refused, naming it, instead of being read as valid.

Masks are turned into integer class labels by :func:`to_labels` (rules in its docstring).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pncd.errors import PncdError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_EXTS = (".nii", ".nii.gz")
SUPPORTED_EXTS = IMAGE_EXTS + NIFTI_EXTS
LOSSY_FORMATS = ("JPEG", "MPO")
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as Pillow's "L"


def split_ext(name: str) -> tuple[str, str]:
    """``("case1", ".nii.gz")`` for ``case1.nii.gz``: the stem and the lower-case extension."""
    lower = name.lower()
    if lower.endswith(".nii.gz"):
        return name[:-7], ".nii.gz"
    p = Path(name)
    return p.stem, p.suffix.lower()


def is_nifti(path: Path) -> bool:
    return split_ext(path.name)[1] in NIFTI_EXTS


def read_raw(path: Path, as_mask: bool = False, channels: int = 1) -> tuple[np.ndarray, bool]:
    """The file's pixels as ``(S, H, W)`` or ``(S, H, W, C)`` in their stored dtype.

    ``channels``: the channels the data set declares per image file; a NIfTI image's 4th axis
    is read as channels only when it holds exactly that many (a mask never has one).
    Returns ``(array, lossy)``; ``lossy`` is True for JPEG, whose masks need thresholding.
    Raises PncdError naming the file when it cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise PncdError(f"{path}: file not found")
    if is_nifti(path):
        return _read_nifti(path, 1 if as_mask else channels, as_mask), False
    return _read_pillow(path, as_mask)


GZIP_MAGIC = b"\x1f\x8b"


def gunzip_checked(path: Path) -> bytes:
    """The whole decompressed content of a gzip file, every member's CRC-32 and length checked
    (Python's gzip checks them at the end of each stream). nibabel stops reading once it has the
    voxels, so a file cut short or with a flipped bit would pass it with wrong or no error.
    A file that is not gzip at all (no magic number) is returned as it is."""
    import gzip
    import zlib

    data = path.read_bytes()
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except EOFError:
        why = "the stream is cut short"
    except (zlib.error, gzip.BadGzipFile) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise PncdError(f"{path}: the file is corrupt (the gzip CRC/length check failed: {why}); "
                    "re-copy or re-convert it")


def _nifti_from_bytes(data: bytes) -> Any:
    """A NIfTI-1 or NIfTI-2 image from a whole single-file image in memory."""
    import nibabel as nib

    sizeof_hdr = {int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big")}
    klass = nib.Nifti2Image if 540 in sizeof_hdr else nib.Nifti1Image
    return klass.from_bytes(data)


def _read_nifti(path: Path, channels: int = 1, as_mask: bool = False) -> np.ndarray:
    import nibabel as nib

    raw = gunzip_checked(path) if path.name.lower().endswith(".gz") else None  # read once, checked whole
    try:
        image: Any = nib.load(str(path)) if raw is None else _nifti_from_bytes(raw)  # an image with .dataobj
        vol = np.asanyarray(image.dataobj)
    except Exception as e:  # nibabel raises many types for truncated/corrupt files
        raise PncdError(f"{path}: cannot be read as NIfTI ({_first_line(e)}); replace or remove the file") from None
    shape = tuple(int(n) for n in vol.shape)
    while vol.ndim > 3 and vol.shape[-1] == 1:  # trailing axes of length 1 (one time point)
        vol = vol[..., 0]
    if vol.ndim == 5 and vol.shape[3] == 1 and channels > 1:  # NIfTI's vector layout (x, y, z, t=1, c)
        vol = vol[:, :, :, 0]
    if vol.ndim == 2:
        vol = vol[:, :, None]
    if vol.ndim == 3:
        return np.ascontiguousarray(vol.transpose(2, 1, 0))  # (z, y=row, x=col)
    if vol.ndim == 4 and channels > 1 and vol.shape[3] == channels:
        return np.ascontiguousarray(vol.transpose(2, 1, 0, 3))
    raise PncdError(_nifti_shape_error(path, shape, channels, as_mask))


def _nifti_shape_error(path: Path, shape: tuple[int, ...], channels: int, as_mask: bool) -> str:
    """Why a NIfTI file of ``shape`` is refused: one line naming it, its shape and what to do."""
    head = f"{path}: NIfTI shape {shape} is not supported"
    if as_mask:
        return f"{head}; a mask must be a 2-D image or a 3-D volume (x, y, slices) of class labels"
    if len(shape) == 4 and channels > 1:
        return (f"{head}: its 4th axis holds {shape[3]} values but the data set declares {channels} channels "
                "per file; store files of the declared channels, or fix dataset.json's \"channel_names\"")
    if len(shape) == 4:
        return (f"{head}: a 4-D volume (x, y, slices, {shape[3]} time points or channels) is read only where "
                "the data set declares its channels (dataset.json \"channel_names\" beside images/, one name "
                "per channel); otherwise store one 3-D file per time point")
    return f"{head}; pncd reads 2-D images or 3-D volumes (x, y, slices); store one file per channel or per time point"


def _read_pillow(path: Path, as_mask: bool) -> tuple[np.ndarray, bool]:
    from PIL import Image

    frames = []
    try:
        with Image.open(path) as img:
            lossy = img.format in LOSSY_FORMATS
            for i in range(getattr(img, "n_frames", 1)):
                img.seek(i)
                img.load()
                frames.append(_pil_to_array(img, as_mask))
    except PncdError:
        raise
    except Exception as e:  # UnidentifiedImageError, truncated data (OSError), decoder errors
        raise PncdError(f"{path}: cannot be read as an image ({_first_line(e)}); replace or remove the file") from None
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise PncdError(f"{path}: its pages have different sizes {sorted(shapes)}; store one image per file")
    return np.stack(frames), lossy


def _pil_to_array(img, as_mask: bool) -> np.ndarray:
    mode = img.mode
    if mode == "1":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("L", "I", "F") or mode.startswith("I;16"):
        return np.asarray(img)
    if mode == "P" and as_mask:
        return np.asarray(img)  # palette indices are the labels (e.g. PASCAL VOC style masks)
    if mode in ("LA", "PA") and as_mask:
        return np.asarray(img.getchannel(0))
    if mode == "LA":
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB"))


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def read_image(paths: tuple[Path, ...], channels: int = 1) -> np.ndarray:
    """Read an image (one file, or one file per channel) as float32 ``(S, H, W, C)``.

    ``channels``: the channels the data set declares per file (:func:`read_raw`).
    Non-finite values (NaN, +-Inf: a broken conversion, a float overflow) are refused here, where
    every caller reads images, naming the file: they would poison normalisation and the loss."""
    parts = []
    for p in paths:
        a, _ = read_raw(p, channels=channels)
        a = a.astype(np.float32, copy=False)
        if not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).sum())
            raise PncdError(f"{p}: {bad} of {a.size} values are NaN or infinite; fix or remove the file")
        if a.ndim == 3:
            a = a[..., None]
        if len(paths) > 1 and a.shape[-1] != 1:
            raise PncdError(f"{p}: a per-channel file must hold one channel, it holds {a.shape[-1]}")
        parts.append(a)
    shapes = {a.shape[:3] for a in parts}
    if len(shapes) != 1:
        names = ", ".join(str(p) for p in paths)
        raise PncdError(f"channel files {names} differ in size {sorted(shapes)}; they must match")
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


def to_channels(x: np.ndarray, channels: int, path: Path) -> np.ndarray:
    """``(S, H, W, C)`` -> float32 ``(S, channels, H, W)``: gray repeated to 3, RGB to gray by luma."""
    c = x.shape[-1]
    if c == channels:
        out = x
    elif c == 1 and channels == 3:
        out = np.repeat(x, 3, axis=-1)
    elif c == 3 and channels == 1:
        out = (x @ GRAY_WEIGHTS)[..., None]
    else:
        raise PncdError(f"{path}: has {c} channels; pncd converts only between 1 (gray) and 3 (RGB) channels")
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2), dtype=np.float32)


def _values(a: np.ndarray, limit: int = 8) -> str:
    u = np.unique(a)
    shown = ", ".join(f"{v:g}" for v in u[:limit].tolist())
    return f"[{shown}{', ...' if len(u) > limit else ''}] ({len(u)} distinct)"


def to_labels(raw: np.ndarray, num_classes: int, path: Path, lossy: bool = False) -> np.ndarray:
    """Turn a mask as stored into integer labels ``(S, H, W)`` (uint8, or int32 for >256 classes).

    Rules:

    - 3-channel masks: equal channels (within JPEG noise) are read as gray; otherwise a binary
      mask takes the brightest channel (a coloured lesion on black). Colour-coded multi-class
      masks are refused.
    - Binary (``num_classes == 2``): values in [0, 1] are thresholded at 0.5 (0/1 labels,
      probability maps); 8-bit-coded masks (maximum 128..255, e.g. 0/255) at half range (128);
      16-bit-coded ones at 32768; JPEG masks, whose compression adds noise, always at 128.
      A lossless coded mask is either two-level (0 and one value) or graded (resized or
      anti-aliased: values on both sides of the threshold besides its maximum, most of the
      marked pixels at or above it); other values below the threshold (0/1 labels with a stray
      255: values 0, 1, 255) are an error naming them, never silently made background.
      Anything else (e.g. values 0, 1, 2) is an error: set ``num_classes`` instead.
    - Multi-class: whole numbers in ``[0, num_classes)``; JPEG is refused (noise changes labels).
    """
    a = raw
    if a.ndim == 4:
        a = _reduce_channels(a, num_classes, path, lossy)
    if a.dtype.kind == "b":
        a = a.astype(np.uint8)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise PncdError(f"{path}: mask holds NaN or infinite values; store integer class labels")
    if a.size == 0:
        raise PncdError(f"{path}: mask is empty (no pixels)")
    vmin, vmax = float(a.min()), float(a.max())
    if vmin < 0:
        raise PncdError(f"{path}: mask has negative values {_values(a)}; labels must be 0..{num_classes - 1}")
    out_dtype = np.uint8 if num_classes <= 256 else np.int32
    if num_classes == 2:
        return (a >= _binary_threshold(a, vmax, path, lossy)).astype(out_dtype)
    if lossy:
        raise PncdError(
            f"{path}: JPEG compression noise changes class labels; store a {num_classes}-class mask as PNG, TIFF or NIfTI"
        )
    if a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
        raise PncdError(f"{path}: mask values {_values(a)} are not whole numbers; store integer class labels")
    if vmax >= num_classes:
        raise PncdError(
            f"{path}: mask values {_values(a)} must be < num_classes={num_classes}; "
            f"set num_classes to {int(vmax) + 1} or fix the labels"
        )
    return a.astype(out_dtype)


def _binary_threshold(a: np.ndarray, vmax: float, path: Path, lossy: bool) -> float:
    """The threshold that reads the binary mask ``a`` (rules: :func:`to_labels`), or PncdError."""
    if lossy:
        return 128.0 if vmax <= 255 else 32768.0
    if vmax <= 1:
        return 0.5
    threshold = 128.0 if 128 <= vmax <= 255 else 32768.0 if 32768 <= vmax <= 65535 else None
    if threshold is None:
        raise PncdError(
            f"{path}: mask values {_values(a)} do not fit num_classes=2 (binary masks are 0/1, "
            f"0/255 or thresholdable 8/16-bit images); if these are class labels set num_classes "
            f"to {int(vmax) + 1} (--num-classes)"
        )
    values, counts = _value_counts(a)
    low = (values > 0) & (values < threshold)
    if not low.any():
        return threshold  # two-level (0/255, 0/65535) or every non-zero value above the threshold
    graded = int(((values >= threshold) & (values < vmax)).sum()) > 0
    n_low, n_high = int(counts[low].sum()), int(counts[values >= threshold].sum())
    if not graded or n_low > n_high:
        shown = ", ".join(f"{v:g}" for v in values[low][:4].tolist()) + (", ..." if low.sum() > 4 else "")
        raise PncdError(
            f"{path}: mask values {_values(a)} are neither labels 0..1 (num_classes=2) nor a binary encoding "
            f"(0/1, 0/255, 0/65535, or a graded mask thresholded at {threshold:g}): {n_low} pixel(s) at {shown} "
            f"would become background and {n_high} at >= {threshold:g} lesion; fix the stray values in the file "
            "(a binary mask holds 0/1 or 0/255; class labels 0..K-1 need --num-classes K)"
        )
    return threshold


def _value_counts(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``a`` and how many pixels hold each (bincount for 8/16-bit integers)."""
    if a.dtype.kind in "ui" and a.dtype.itemsize <= 2:
        counts = np.bincount(a.ravel().astype(np.int64))
        values = np.flatnonzero(counts)
        return values.astype(np.float64), counts[values]
    values, counts = np.unique(a, return_counts=True)
    return values.astype(np.float64), counts


def _reduce_channels(a: np.ndarray, num_classes: int, path: Path, lossy: bool) -> np.ndarray:
    c = a.shape[-1]
    if c == 1:
        return a[..., 0]
    wide = a.astype(np.float32) if a.dtype.kind != "f" else a
    spread = float(np.abs(wide - wide[..., :1]).max())
    if spread <= (24.0 if lossy else 0.0):
        return wide.mean(axis=-1) if lossy else a[..., 0]
    if num_classes == 2:
        return a.max(axis=-1)
    raise PncdError(
        f"{path}: a colour-coded {c}-channel mask cannot be read as {num_classes} classes; "
        "convert it to a one-channel image of class labels 0..K-1"
    )


def read_mask(path: Path, num_classes: int) -> np.ndarray:
    """Read a mask file as labels ``(S, H, W)`` following :func:`to_labels`."""
    raw, lossy = read_raw(path, as_mask=True)
    return to_labels(raw, num_classes, path, lossy)


def read_pair(images: tuple[Path, ...], mask: Path, channels: int, num_classes: int,
              file_channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """An image (float32 ``(S, C, H, W)``, raw intensities) and its labels ``(S, H, W)``, checked to match.
    ``channels``: the network's input channels; ``file_channels``: those the data set declares per file."""
    img = read_image(images, file_channels)
    lab = read_mask(mask, num_classes)
    if img.shape[:3] != lab.shape:
        raise PncdError(
            f"{images[0]} and {mask}: image is {_shape(img.shape[:3])} but mask is {_shape(lab.shape)}; "
            "an image and its mask must have the same size"
        )
    return to_channels(img, channels, images[0]), lab


def _shape(s: tuple[int, ...]) -> str:
    n, h, w = s
    return f"{h}x{w}" + (f" x {n} slices" if n != 1 else "")
