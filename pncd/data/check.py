"""``pncd data check``: read a whole data set once and report what is in it and what is wrong.

Unlike :func:`pncd.data.load_split`, which stops at the first unusable file, the check reads
every case and collects every problem (with its file), so one run lists all that needs fixing.
Statistics are taken at the files' own size, before resizing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pncd.console import progress

from pncd.errors import PncdError
from pncd.data.layout import SPLIT_NAMES, Layout, Problem, discover
from pncd.data.readers import read_image, read_mask
from pncd.data.splits import TRAINING_SPLITS, empty_split, resolve_splits, unassigned


def _problem(severity: str, path: Path, err: Exception) -> Problem:
    msg = str(err)
    prefix = f"{path}: "
    return Problem(severity, str(path), msg[len(prefix) :] if msg.startswith(prefix) else msg)


def _splits_for_report(layout: Layout, seed: int, val_fraction: float, test_fraction: float) -> tuple[dict[str, list[str]], str]:
    try:
        return resolve_splits(layout, seed, val_fraction, test_fraction)
    except PncdError as e:  # cases listed but missing: report, and describe what is present
        layout.problems.append(_problem("error", layout.root / "splits.json", e))
        assert layout.splits is not None
        return {k: [c for c in v if c in layout.cases] for k, v in layout.splits.items()}, "splits.json"


class _Tally:
    """What the readable files hold, counted as the check reads them."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.pixels = np.zeros(num_classes, dtype=np.int64)
        self.sizes: Counter[str] = Counter()
        self.channels: Counter[str] = Counter()
        self.formats: Counter[str] = Counter()
        self.per_case: dict[str, dict[str, int]] = {}

    def read_case(self, cid: str, case: Any, problems: list[Problem]) -> None:
        """Read every image/mask pair of one case; a case is readable when all its pairs are."""
        n_slices = n_fg = 0
        readable = True
        for item in case.items:
            pair = _read_pair(item, self.num_classes, problems)
            if pair is None:
                readable = False
                continue
            img, lab = pair
            self.sizes[f"{img.shape[1]}x{img.shape[2]}"] += img.shape[0]
            self.channels[str(img.shape[3])] += 1
            self.formats[_fmt(item.images[0])] += 1
            self.pixels += np.bincount(lab.ravel().astype(np.int64), minlength=self.num_classes)[: self.num_classes]
            n_slices += lab.shape[0]
            n_fg += int((lab.reshape(lab.shape[0], -1) > 0).any(axis=1).sum())
        if readable:
            self.per_case[cid] = {"slices": n_slices, "foreground_slices": n_fg}


def _read_pair(item: Any, num_classes: int, problems: list[Problem]) -> tuple[np.ndarray, np.ndarray] | None:
    """An item's image and mask, or None with every problem found recorded."""
    img = None
    try:
        img = read_image(item.images, item.channels)
    except PncdError as e:
        problems.append(_problem("error", item.images[0], e))
    try:
        lab = read_mask(item.mask, num_classes)
    except PncdError as e:
        problems.append(_problem("error", item.mask, e))
        return None
    if img is None:
        return None
    if img.shape[:3] != lab.shape:
        problems.append(Problem("error", str(item.mask),
                                f"size {_hw(lab.shape)} differs from its image {item.images[0]} ({_hw(img.shape[:3])})"))
        return None
    return img, lab


def _split_rows(splits: dict[str, list[str]], per_case: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    rows = {}
    for name in SPLIT_NAMES:
        ids = [c for c in splits[name] if c in per_case]
        rows[name] = {
            "cases": len(splits[name]),
            "slices": sum(per_case[c]["slices"] for c in ids),
            "foreground_slices": sum(per_case[c]["foreground_slices"] for c in ids),
        }
    return rows


def _foreground_warnings(layout: Layout, n_slices: int, n_fg: int, train: dict[str, int]) -> None:
    if n_slices and n_fg == 0:
        layout.problems.append(Problem("warning", str(layout.root), f"no mask has a foreground pixel ({n_slices} slices, all "
                                       "background): a network trained on it learns to predict nothing; check the masks"))
    elif n_slices and train["slices"] and train["foreground_slices"] == 0:
        layout.problems.append(Problem("warning", str(layout.root), "the train split has no foreground pixel in "
                                       "any mask; training would learn to predict nothing"))


def _empty_split_problems(layout: Layout, splits: dict[str, list[str]], origin: str) -> None:
    """An empty train or val split is an error (pncd train refuses it: the same rule,
    :func:`pncd.data.splits.empty_split`); an empty test split a warning (eval and bench read it)."""
    if not layout.cases:
        return  # the empty data set is its own error
    for name in SPLIT_NAMES:
        empty = empty_split(layout.root, splits, origin, name)
        if empty is not None:
            need = "pncd train and distill need it" if name in TRAINING_SPLITS else "pncd eval and bench read it by default"
            layout.problems.append(Problem("error" if name in TRAINING_SPLITS else "warning", str(empty[0]),
                                           f"{empty[1]} ({need})"))


def _num_classes(layout: Layout, num_classes: int | None) -> tuple[int, str]:
    """The class count to check against and where it came from (option, dataset.json, default)."""
    if num_classes is None:
        return (layout.num_classes, "dataset.json") if layout.num_classes else (2, "default")
    if layout.num_classes is not None and layout.num_classes != num_classes:
        layout.problems.append(
            Problem("error", str(layout.root / "dataset.json"), f"declares {layout.num_classes} classes, not {num_classes}")
        )
    return num_classes, "option"


def check_dataset(
    root: str | Path,
    num_classes: int | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> dict[str, Any]:
    """Statistics and problems of the data set at ``root`` as a JSON-friendly dict.

    ``num_classes`` defaults to dataset.json's labels (nnU-Net) or 2. ``report["ok"]`` is False
    when any problem is an error. Raises PncdError only when ``root`` holds no data set layout.
    """
    layout = discover(root)
    k, k_source = _num_classes(layout, num_classes)
    splits, split_source = _splits_for_report(layout, split_seed, val_fraction, test_fraction)
    tally = _Tally(k)
    for cid, case in progress(layout.cases.items(), total=len(layout.cases), desc="checking", unit="case"):
        tally.read_case(cid, case, layout.problems)
    for c in unassigned(layout, splits) if split_source == "splits.json" else []:
        layout.problems.append(Problem("warning", str(layout.root / "splits.json"), f"case {c!r} is on disk but in no split"))
    _empty_split_problems(layout, splits, split_source)

    per_case, total = tally.per_case, int(tally.pixels.sum())
    n_slices = sum(c["slices"] for c in per_case.values())
    n_fg = sum(c["foreground_slices"] for c in per_case.values())
    split_rows = _split_rows(splits, per_case)
    _foreground_warnings(layout, n_slices, n_fg, split_rows["train"])
    errors = [p for p in layout.problems if p.severity == "error"]
    return {
        "root": str(layout.root),
        "layout": layout.kind,
        "formats": dict(tally.formats),
        "num_classes": k,
        "num_classes_from": k_source,
        "cases": len(layout.cases),
        "readable_cases": len(per_case),
        "slices": n_slices,
        "foreground_slices": n_fg,
        "empty_slices": n_slices - n_fg,
        "cases_without_foreground": [c for c, v in per_case.items() if v["foreground_slices"] == 0],
        "image_sizes": dict(tally.sizes.most_common()),
        "channels": dict(tally.channels),
        "class_pixel_fraction": {str(i): (float(tally.pixels[i]) / total if total else 0.0) for i in range(k)},
        "split_source": split_source,
        "splits": split_rows,
        "problems": [vars(p) for p in layout.problems],
        "errors": len(errors),
        "warnings": len(layout.problems) - len(errors),
        "ok": not errors,
    }


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[2]}" + (f" x {shape[0]} slices" if shape[0] != 1 else "")


def _fmt(path: Path) -> str:
    from pncd.data.readers import split_ext

    ext = split_ext(path.name)[1]
    return {".nii.gz": "NIfTI", ".nii": "NIfTI", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        ext, ext.lstrip(".").upper()
    )


def format_report(r: dict[str, Any], max_problems: int = 50) -> str:
    """The check report as a human-readable table."""
    pct = lambda x: f"{100 * x:.2f}%"  # noqa: E731
    lines = [
        f"data set      {r['root']}",
        f"layout        {r['layout']} ({', '.join(f'{k} x{v}' for k, v in r['formats'].items()) or 'no readable files'})",
        f"cases         {r['cases']} ({r['readable_cases']} readable)",
        f"slices        {r['slices']} ({r['foreground_slices']} with foreground, {r['empty_slices']} empty)",
        f"image sizes   " + (", ".join(f"{k} ({v} slices)" for k, v in r["image_sizes"].items()) or "-"),
        f"channels      " + (", ".join(f"{k} ({v} files)" for k, v in r["channels"].items()) or "-"),
        f"classes       {r['num_classes']} (from {r['num_classes_from']}); pixel fraction "
        + ", ".join(f"{k}: {pct(v)}" for k, v in r["class_pixel_fraction"].items()),
        f"empty cases   {len(r['cases_without_foreground'])}"
        + (f" ({', '.join(r['cases_without_foreground'][:8])}{', ...' if len(r['cases_without_foreground']) > 8 else ''})" if r["cases_without_foreground"] else ""),
        "",
        f"splits        from {r['split_source']}",
        f"  {'split':<8} {'cases':>7} {'slices':>8} {'with foreground':>16}",
    ]
    for name, row in r["splits"].items():
        lines.append(f"  {name:<8} {row['cases']:>7} {row['slices']:>8} {row['foreground_slices']:>16}")
    lines.append("")
    problems = r["problems"]
    if not problems:
        lines.append("problems      none")
    else:
        lines.append(f"problems      {r['errors']} error(s), {r['warnings']} warning(s)")
        for p in problems[:max_problems]:
            lines.append(f"  {p['severity']:<7} {p['file']}: {p['message']}")
        if len(problems) > max_problems:
            lines.append(f"  ... and {len(problems) - max_problems} more (see --json)")
    return "\n".join(lines)
