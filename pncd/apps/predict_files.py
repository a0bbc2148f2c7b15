"""The files of ``pncd predict``: which inputs the arguments name, each one checked before any
work, read as the data layer reads a data set, and its mask written in the input's form.

- :func:`collect`: files as given, folders as their files (sorted by name, not recursive), each
  named relative to the argument that gave it (``predictions.json`` records no absolute path);
- :func:`probe`: the header only (NIfTI shape, image size and pages), refusing an unreadable or
  unsupported file, and :func:`check_channels` channels the model cannot take, before anything
  is read whole or written;
- :func:`read`: the pixels as training reads them (:func:`pncd.data.readers.read_image` and
  :func:`~pncd.data.readers.to_channels`: slices along a volume's last axis, gray repeated to 3
  channels, RGB to gray by luma);
- :func:`restore`: label maps back to the input's size (nearest neighbour, as training resizes
  masks), and :func:`write`: NIfTI in, NIfTI out (uint8 labels, the input's affine and header,
  its shape less a channel axis); a 2-D image in, a PNG of class indices out (a multi-page
  TIFF: a TIFF);
- :class:`Progress`: a bar over the files on a terminal, else a line per file.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pncd.data.readers import SUPPORTED_EXTS, is_nifti, split_ext
from pncd.errors import PncdError

KINDS_SAID = "image files (PNG, JPEG, TIFF, BMP), NIfTI volumes (.nii, .nii.gz) or folders of them"


@dataclass
class Input:
    """One input file, checked by :func:`probe`."""

    path: Path
    name: str  # relative to the argument that named it (as predictions.json records it)
    output: str = ""  # the mask's file name in --out
    nifti: bool = False
    shape: tuple[int, ...] = ()  # as stored: a NIfTI's dimensions, an image's (pages, rows, columns)
    slices: int = 1
    hw: tuple[int, int] = (0, 0)  # (rows, columns) of a slice
    channels: int = 1  # per file: a NIfTI's 4th axis, else 1 (gray) or 3 (colour)


def collect(args: list[str | os.PathLike]) -> list[Input]:
    """The input files the arguments name, in order; one line naming the argument for one that
    is missing, a file pncd does not read, or a folder without such files."""
    out: list[Input] = []
    for arg in args:
        p = Path(arg)
        if not p.exists():
            raise PncdError(f"{p}: input not found; pass {KINDS_SAID} (nothing was written)")
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and split_ext(f.name)[1] in SUPPORTED_EXTS)
            if not files:
                raise PncdError(f"{p}: no image or NIfTI file in this folder (its subfolders are not read); pass "
                                f"{KINDS_SAID} (nothing was written)")
            base = p.resolve().name or "."
            out += [Input(f, f"{base}/{f.name}") for f in files]
        elif split_ext(p.name)[1] in SUPPORTED_EXTS:
            out.append(Input(p, p.name))
        else:
            raise PncdError(f"{p}: not an image or NIfTI file ({split_ext(p.name)[1] or 'no extension'}); pass "
                            f"{KINDS_SAID} (nothing was written)")
    return out


def probe(item: Input) -> Input:
    """``item`` with what its header says (shape, slices, channels) and its output name; a
    PncdError naming the file when it cannot be read."""
    path = item.path
    stem, ext = split_ext(path.name)
    if is_nifti(path):
        dims = _nifti_dims(path)
        item.nifti, item.shape, item.output = True, dims, stem + ext
        core = list(dims)
        while len(core) > 3 and core[-1] == 1:
            core.pop()
        if len(core) == 5 and core[3] == 1:  # NIfTI's vector layout (x, y, z, t=1, c)
            core.pop(3)
        if len(core) > 4 or len(core) < 2:
            raise PncdError(f"{path}: NIfTI shape {dims} is not supported; pass 2-D images or 3-D volumes "
                            "(x, y, slices), optionally with channels on a 4th axis (nothing was written)")
        item.channels = core[3] if len(core) == 4 else 1
        item.slices = core[2] if len(core) >= 3 else 1
        item.hw = (core[1], core[0])
    else:
        pages, size, mode = _image_header(path)
        item.shape, item.slices, item.hw = (pages, size[1], size[0]), pages, (size[1], size[0])
        item.channels = 1 if mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;16") else 3
        item.output = stem + (".png" if pages == 1 else ".tif")
    return item


def check_channels(item: Input, channels: int, model: str) -> None:
    """Refuse, naming the file, channels ``model`` (which takes ``channels``) cannot take: only
    gray and RGB convert into each other, as in training."""
    c = item.channels
    if c != channels and {c, channels} != {1, 3}:
        where = " on its 4th axis" if item.nifti else ""
        kind = "gray" if channels == 1 else "RGB" if channels == 3 else "channels"
        raise PncdError(f"{item.path}: holds {c} channels{where}, but {model} takes {channels} ({kind}); pass files "
                        f"with {channels} channel(s) (gray and RGB are converted into each other) (nothing was written)")


def _nifti_dims(path: Path) -> tuple[int, ...]:
    import nibabel as nib

    try:
        image: Any = nib.load(str(path))  # the header only
        return tuple(int(n) for n in image.shape)
    except Exception as e:  # nibabel raises many types for damaged headers
        raise PncdError(f"{path}: cannot be read as NIfTI ({_first_line(e)}); replace or remove the file "
                        "(nothing was written)") from None


def _image_header(path: Path) -> tuple[int, tuple[int, int], str]:
    """(pages, (width, height), mode) of an image file."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return int(getattr(img, "n_frames", 1)), img.size, img.mode
    except Exception as e:  # UnidentifiedImageError, OSError
        raise PncdError(f"{path}: cannot be read as an image ({_first_line(e)}); replace or remove the file "
                        "(nothing was written)") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip() or type(e).__name__).splitlines()[0]


def check_names(items: list[Input], out: Path) -> None:
    """Two inputs whose masks would have one name in ``out`` are refused, naming both."""
    seen: dict[str, Input] = {}
    for it in items:
        other = seen.setdefault(it.output, it)
        if other is not it:
            raise PncdError(f"{other.path} and {it.path} would both be written as {out / it.output}; rename one or "
                            "predict them into separate --out folders (nothing was written)")


def read(item: Input, channels: int) -> np.ndarray:
    """The raw pixels of ``item`` as the data layer reads a data set's image: float32
    ``(S, channels, H, W)``, slice ``z`` of a volume being ``vol[:, :, z].T``."""
    from pncd.data.readers import read_image, to_channels

    x = read_image((item.path,), item.channels)
    if x.shape[1:3] != item.hw or len(x) != item.slices:
        raise PncdError(f"{item.path}: its pixels ({len(x)} x {x.shape[1]}x{x.shape[2]}) do not match its header "
                        f"({item.slices} x {item.hw[0]}x{item.hw[1]}); replace the file")
    return to_channels(x, channels, item.path)


def write(item: Input, labels: np.ndarray, folder: Path) -> list[int]:
    """Write the labels ``(S, H, W)`` (at the input's size) of ``item`` into ``folder`` as its
    mask; returns the mask's shape as written."""
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    if item.nifti:
        return _write_nifti(item, labels, folder / item.output)
    from PIL import Image

    frames = [Image.fromarray(s, mode="L") for s in labels]
    if len(frames) == 1:
        frames[0].save(folder / item.output, format="PNG")
        return list(labels.shape[1:])
    frames[0].save(folder / item.output, format="TIFF", save_all=True, append_images=frames[1:])
    return list(labels.shape)


def _write_nifti(item: Input, labels: np.ndarray, path: Path) -> list[int]:
    """uint8 labels with the input's affine and header (its data type, scaling and display range
    set for labels); axes as stored, (x, y, slices), a channel axis dropped."""
    import gzip

    import nibabel as nib

    src: Any = nib.load(str(item.path))
    spatial = item.shape[:3] if len(item.shape) >= 3 else item.shape
    vol = labels.transpose(2, 1, 0).reshape(spatial)  # slices (z, row=y, col=x) -> (x, y, z)
    header = src.header.copy()
    mask = type(src)(vol, src.affine, header=header)
    mask.set_data_dtype(np.uint8)
    mask.header.set_slope_inter(None, None)
    mask.header["cal_min"], mask.header["cal_max"] = 0, 0
    if item.channels > 1:
        mask.header.set_intent("none")  # a vector (channels) intent no longer holds
    data = mask.to_bytes()
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    path.write_bytes(data)
    return [int(n) for n in vol.shape]


def voxels(labels: np.ndarray, num_classes: int) -> dict[str, int]:
    """Pixels (voxels) per class, every class listed: ``{"0": n0, "1": n1, ...}``."""
    counts = np.bincount(labels.ravel(), minlength=num_classes)
    return {str(k): int(n) for k, n in enumerate(counts)}


def restore(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Label maps ``(S, h, w)`` back to ``(S, H, W)`` with nearest neighbour ("nearest-exact")."""
    if labels.shape[1:] == tuple(hw):
        return labels
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))[:, None]
    return F.interpolate(t, size=tuple(hw), mode="nearest-exact")[:, 0].numpy().round().astype(np.uint8)


class Progress:
    """A tqdm bar over the files on a terminal; else one line per file through ``log``."""

    def __init__(self, total: int, log: Callable[[str], None], enabled: bool) -> None:
        self.total, self.log, self.done = total, log, 0
        self.bar = None
        self.enabled = enabled
        if enabled and _stderr_is_terminal():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="predict", unit="file", leave=False)

    def step(self, item: Input, shape: list[int]) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            self.log(f"predict [{self.done}/{self.total}] {item.name} -> {item.output} "
                     f"({'x'.join(map(str, shape))})")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
