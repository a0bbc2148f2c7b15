"""The built-in synthetic data set: FLAIR-like brain phantoms with one irregular lesion.

Each case is a small 3-D volume: a head-shaped ellipse (bright scalp, dark skull, brain with
grey/white texture, dark CSF ventricles), a smooth multiplicative bias field and Rician noise.
The lesion is a 3-D blob whose surface is perturbed by a smooth random field, so its outline
is irregular and its area grows and shrinks across slices; slices away from it have none. It is
brighter than the brain (like a FLAIR hyperintensity) and wrapped in a fainter, unlabelled
oedema-like halo; together with texture, bias and noise, lesion and non-lesion intensities
overlap, so thresholding alone does not solve it but a small network learns it.

Written like the LGG set: ``images/<case>.nii.gz`` (uint8) and ``labels/<case>.nii.gz``
({0, 1}), axes (x = column, y = row, z = slice), identity affine, plus ``splits.json`` and
``synthetic.json`` (the parameters). The same parameters give byte-identical files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pncd.errors import PncdError
from pncd.data.splits import seeded_split

VERSION = 1


def _interp_matrix(m: int, n: int) -> np.ndarray:
    """(n, m) matrix of linear interpolation from m to n samples, end points aligned."""
    pos = np.linspace(0, m - 1, n)
    lo = np.clip(np.floor(pos).astype(int), 0, max(m - 2, 0))
    hi = np.minimum(lo + 1, m - 1)
    w = pos - lo
    out = np.zeros((n, m))
    np.add.at(out, (np.arange(n), lo), 1 - w)
    np.add.at(out, (np.arange(n), hi), w)
    return out


def _smooth_field(rng: np.random.Generator, coarse: tuple[int, int, int], out: tuple[int, int, int]) -> np.ndarray:
    """A smooth random field of shape ``out`` (unit std): coarse noise, trilinear up-sampling.

    float64 throughout, so that rounding to uint8 gives the same bytes on other CPUs and BLAS
    builds (a float32 ulp difference would flip a few pixels).
    """
    f = rng.standard_normal(coarse)
    f = np.tensordot(_interp_matrix(coarse[0], out[0]), f, axes=(1, 0))  # (Z, cy, cx)
    f = np.matmul(_interp_matrix(coarse[1], out[1]), f)  # (Z, H, cx)
    f = np.matmul(f, _interp_matrix(coarse[2], out[2]).T)  # (Z, H, W)
    return f / (f.std() + 1e-6)


def phantom(rng: np.random.Generator, n_slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One case: image uint8 ``(Z, H, W)`` and mask uint8 ``(Z, H, W)``, rows before columns."""
    shape = (n_slices, size, size)
    zc = max(2, n_slices // 3 + 2)
    t = ((np.arange(n_slices) + 0.5) / n_slices * 2 - 1)[:, None, None]  # -1 .. 1 through the head
    axis = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    yy, xx = yy[None], xx[None]

    # Head outline: an ellipse that shrinks towards the first and last slices.
    scale = np.sqrt(1 - (0.7 * t) ** 2)
    a, b = rng.uniform(0.68, 0.80), rng.uniform(0.80, 0.90)  # half-width, half-height
    theta = np.deg2rad(rng.uniform(-10, 10))
    cy, cx = (float(c) for c in rng.uniform(-0.05, 0.05, size=2))
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    r = np.sqrt((u / (a * scale)) ** 2 + (v / (b * scale)) ** 2)
    head, brain = r < 1.0, r < 0.86

    img = np.zeros(shape)
    img[head] = 0.55  # scalp
    img[(r >= 0.86) & (r < 0.92)] = 0.08  # skull
    folds = _smooth_field(rng, (zc, 14, 14), shape)  # grey/white matter pattern
    img[brain] = np.where(folds[brain] > 0.3, 0.47, 0.38)
    img += brain * 0.03 * _smooth_field(rng, (zc, 8, 8), shape)

    # Ventricles: two dark CSF ellipses beside the midline, largest in the middle slices.
    vent_scale = np.clip(1 - np.abs(t) * 1.3, 0, None)
    for side in (-1, 1):
        vu = (u - side * 0.11 * a) / (0.06 * a * vent_scale + 1e-6)
        vv = (v + 0.05) / (0.22 * b * vent_scale + 1e-6)
        img[(vu**2 + vv**2 < 1) & brain] = 0.13

    # Lesion: a 3-D blob with a perturbed surface, away from the midline.
    lr = rng.uniform(0.25, 0.5)
    ang = rng.uniform(0, 2 * np.pi)
    lu, lv = lr * a * np.cos(ang), lr * b * np.sin(ang)
    lz = rng.uniform(0.3, 0.7) * n_slices
    rad = rng.uniform(0.12, 0.24)
    rad_z = rng.uniform(0.22, 0.4) * n_slices
    zz = np.arange(n_slices)[:, None, None] + 0.5
    d2 = ((u - lu) / rad) ** 2 + ((v - lv) / rad) ** 2 + ((zz - lz) / rad_z) ** 2
    d2 = d2 + 0.45 * _smooth_field(rng, (zc, 10, 10), shape)
    lesion = (d2 < 1.0) & brain
    halo = (d2 < 1.8) & brain & ~lesion
    img[halo] = np.maximum(img[halo], 0.50 + 0.04 * rng.standard_normal(int(halo.sum())))
    img[lesion] = 0.62 + 0.06 * _smooth_field(rng, (zc, 12, 12), shape)[lesion]

    # An unlabelled bright spot elsewhere (a distractor, like a vessel or artefact).
    su, sv = rng.uniform(-0.4, 0.4) * a, rng.uniform(-0.4, 0.4) * b
    spot = (((u - su) / 0.05) ** 2 + ((v - sv) / 0.05) ** 2 < 1) & brain & ~lesion & (np.abs(t) < 0.5)
    img[spot] = 0.56

    # Acquisition: smooth bias field, then Rician noise (magnitude of complex Gaussian noise).
    img *= np.exp(0.18 * _smooth_field(rng, (3, 4, 4), shape))
    sigma = rng.uniform(0.025, 0.045)
    n1, n2 = rng.standard_normal(shape), rng.standard_normal(shape)
    img = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)
    image = np.clip(np.round(img * 300), 0, 255).astype(np.uint8)
    return image, lesion.astype(np.uint8)


def _save_nifti(arr: np.ndarray, path: Path) -> None:
    """Save ``(Z, H, W)`` as a NIfTI volume with axes (x = column, y = row, z = slice)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), np.eye(4))
    img.header.set_data_dtype(arr.dtype)
    nib.save(img, str(path))


SYNTH_FILES = ("images", "labels", "splits.json", "synthetic.json")  # what generate writes


def generate(
    out_dir: str | os.PathLike,
    n_cases: int = 24,
    n_slices: int = 8,
    size: int = 128,
    seed: int = 0,
    *,
    force: bool = False,
    exist_ok: bool = False,
) -> Path:
    """Write a synthetic data set to ``out_dir`` and return its path.

    Built in a temporary sibling directory and renamed into place, so a failure leaves nothing
    behind. An existing ``out_dir`` is an error unless ``force`` or ``exist_ok`` (keep it: used
    for the cached default, where another process may have built it first). ``force`` replaces
    only what pncd wrote there (its ``.pncd-owned.json``) and refuses a folder pncd did not write.
    """
    from pncd.io import check_owned, check_parents, swap_into, write_json, write_owned

    if n_cases < 1 or n_slices < 1 or size < 16:
        raise PncdError(f"synthetic data needs cases >= 1, slices >= 1 and size >= 16 (got {n_cases}, {n_slices}, {size})")
    out = check_parents(Path(out_dir).expanduser(), "OUT")
    if out.exists() and not out.is_dir():
        raise PncdError(f"{out} is a file, not a directory; choose another directory (nothing was changed)")
    if out.exists() and exist_ok:
        return out
    if out.exists() and not force:
        raise PncdError(f"{out} already exists; choose another directory or pass --force")
    if out.exists():
        check_owned(out, SYNTH_FILES, "OUT", kind="dataset")  # --force: a folder pncd did not write is not replaced
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        width = max(3, len(str(n_cases - 1)))
        ids = [f"synth_{i:0{width}d}" for i in range(n_cases)]
        for i, cid in enumerate(ids):
            image, mask = phantom(np.random.default_rng([seed, i]), n_slices, size)
            _save_nifti(image, tmp / "images" / f"{cid}.nii.gz")
            _save_nifti(mask, tmp / "labels" / f"{cid}.nii.gz")
        write_json(tmp / "splits.json", seeded_split(ids, seed, 0.15, 0.15))
        params = {"n_cases": n_cases, "n_slices": n_slices, "size": size, "seed": seed}
        write_json(tmp / "synthetic.json", {"generator": "pncd.data.synthetic", "version": VERSION, **params})
        from pncd.io import _umask

        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700: give the data set normal permissions
        write_owned(tmp, SYNTH_FILES, "dataset")
        if out.exists() and force:
            swap_into(tmp, out)
            return out
        try:
            os.rename(tmp, out)
        except OSError:
            if exist_ok and out.is_dir():  # another process finished first; its content is identical
                return out
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
