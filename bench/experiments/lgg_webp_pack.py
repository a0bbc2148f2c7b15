"""Carry LGG FLAIR at full size (256x256) to a machine that takes at most 64 MiB of files.

The set is 108 MB of gzipped NIfTI. Each slice stored as lossless WebP is about 63% of that
(76 MB), still over the limit. Two ways down, which can be combined: ``--drop-bits 1`` stores
the images at 7 bits (each value rounded down to an even one: at most 1 of 255 off, 0.5 on
average; masks stay exact), about 24% smaller, and the whole set fits in 58 MB; and whole training
patients are left out (the last ones of a seeded shuffle of the train split) until the pack fits
``--budget-mb``. Validation and test are never cut, so test scores stay comparable with runs on
the full set.

    python bench/experiments/lgg_webp_pack.py pack path/to/lgg-flair .dev/lgg256 --budget-mb 60 --drop-bits 1
    python bench/experiments/lgg_webp_pack.py unpack .dev/lgg256 /tmp/lgg256      # on the far machine

``pack`` writes ``slices.bin`` (every slice's WebP image and PNG mask, back to back) and
``index.json`` (where each is), and checks that every slice decodes back to the same bytes; ``unpack`` writes the
lgg-flair layout (``images/``, ``labels/`` as uncompressed NIfTI, ``splits.json``), so pncd
reads it as it reads the original. ``pack.json`` records what was left out.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def _webp(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    # effort 90/5: 2% larger than the slowest setting (100/6), 18x faster
    Image.fromarray(a).save(b, format="WEBP", lossless=True, quality=90, method=5)
    return b.getvalue()


def _png(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, format="PNG", optimize=True)
    return b.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def pack(src: Path, dst: Path, budget_mb: float, seed: int, drop_bits: int) -> None:
    import nibabel as nib

    splits = json.loads((src / "splits.json").read_text())
    encoded: dict[str, tuple[list[bytes], list[bytes]]] = {}
    for name in sorted(p for split in splits.values() for p in split):
        img = np.asarray(nib.load(src / "images" / f"{name}.nii.gz").dataobj)
        lab = np.asarray(nib.load(src / "labels" / f"{name}.nii.gz").dataobj)
        if img.dtype != np.uint8 or lab.dtype != np.uint8 or img.shape != lab.shape:
            sys.exit(f"{name}: expected uint8 image and mask of one shape, "
                     f"got {img.dtype}{img.shape} {lab.dtype}{lab.shape}")
        ims, labs = [], []
        for z in range(img.shape[2]):  # slice z is vol[:, :, z].T (rows first), as pncd reads it
            sl, ml = np.ascontiguousarray(img[:, :, z].T >> drop_bits), np.ascontiguousarray(lab[:, :, z].T)
            ims.append(_webp(sl))
            labs.append(_png(ml))
            if not (np.array_equal(_decode(ims[-1]), sl) and np.array_equal(_decode(labs[-1]), ml)):
                sys.exit(f"{name} slice {z}: the lossless round trip changed the data")
        encoded[name] = (ims, labs)
        print(f"{name}: {img.shape[2]} slices, {sum(map(len, ims)) / 1e6:.2f} MB", flush=True)

    def size(names: list[str]) -> int:
        return sum(len(b) for n in names for part in encoded[n] for b in part)

    train = list(splits["train"])
    random.Random(seed).shuffle(train)
    kept = list(train)
    fixed = list(splits["val"]) + list(splits["test"])
    while kept and size(fixed + kept) > budget_mb * 1e6:
        kept.pop()
    dropped = sorted(set(train) - set(kept))
    dst.mkdir(parents=True, exist_ok=True)
    index: dict[str, list[tuple[int, int, int, int]]] = {}
    offset = 0
    with open(dst / "slices.bin", "wb") as fh:  # one file: thousands of small ones cost a block each
        for name in fixed + kept:
            index[name] = []
            for i, m in zip(*encoded[name]):
                fh.write(i + m)
                index[name].append((offset, len(i), offset + len(i), len(m)))
                offset += len(i) + len(m)
    (dst / "index.json").write_text(json.dumps(index))
    out_splits = {"train": sorted(kept), "val": splits["val"], "test": splits["test"]}
    (dst / "splits.json").write_text(json.dumps(out_splits, indent=1))
    fmt = f"one WebP image (lossless codec, {8 - drop_bits}-bit values) and one PNG mask per slice (rows first)"
    record = {"source": str(src), "format": fmt,
              "drop_bits": drop_bits, "budget_mb": budget_mb, "bytes": size(fixed + kept), "shuffle_seed": seed,
              "train_kept": len(kept), "train_total": len(train), "train_dropped": dropped}
    (dst / "pack.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "train_dropped"}))


def unpack(src: Path, dst: Path) -> None:
    import nibabel as nib

    splits = json.loads((src / "splits.json").read_text())
    shift = json.loads((src / "pack.json").read_text()).get("drop_bits", 0)
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "labels").mkdir(parents=True, exist_ok=True)
    index = json.loads((src / "index.json").read_text())
    blob = (src / "slices.bin").read_bytes()
    for name in (p for split in splits.values() for p in split):
        img = np.stack([_decode(blob[a:a + n]).T for a, n, _, _ in index[name]], axis=2) << shift
        lab = np.stack([_decode(blob[a:a + n]).T for _, _, a, n in index[name]], axis=2)
        nib.save(nib.Nifti1Image(img, np.eye(4)), dst / "images" / f"{name}.nii")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), dst / "labels" / f"{name}.nii")
    (dst / "splits.json").write_text(json.dumps(splits, indent=1))
    print(f"unpacked {sum(map(len, splits.values()))} patients into {dst}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--budget-mb", type=float, default=58.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drop-bits", type=int, default=0, choices=(0, 1, 2), help="Low image bits to drop (0: lossless).")
    u = sub.add_parser("unpack")
    u.add_argument("src", type=Path)
    u.add_argument("dst", type=Path)
    a = ap.parse_args()
    if a.cmd == "pack":
        pack(a.src, a.dst, a.budget_mb, a.seed, a.drop_bits)
    else:
        unpack(a.src, a.dst)


if __name__ == "__main__":
    main()
