"""Finding the cases of a data set directory and pairing images with masks.

Two layouts are read as they stand:

- ``images/`` + ``labels/`` (or ``masks/``): files paired by stem (``a.png`` with ``a.png`` or
  ``a_mask.png``; ``p1.nii.gz`` with ``p1.nii.gz``). A NIfTI volume is one case; a 2-D image is
  its own case (case id = stem) unless ``splits.json`` names a case that prefixes the stem
  (``TCGA_X_12.png`` belongs to case ``TCGA_X``), so slices stored as images still group into
  patients. An optional ``dataset.json`` beside ``images/`` may declare ``"channel_names"``
  (one name per channel, nnU-Net's key): then a NIfTI image's 4th axis holds that many
  channels; without it a 4-D NIfTI image is refused (its 4th axis may be time).
- nnU-Net v2 raw: ``dataset.json``, ``imagesTr/<case>_0000.<ext>`` (one file per channel,
  ``_0001`` ...) and ``labelsTr/<case>.<ext>``; ``dataset.json``'s ``labels`` give the number
  of classes.

Discovery collects every pairing problem instead of stopping at the first, so ``pncd data
check`` can list them all; :func:`pncd.data.load_split` raises them together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pncd.errors import PncdError
from pncd.data.readers import NIFTI_EXTS, SUPPORTED_EXTS, split_ext

MASK_SUFFIXES = ("_mask", "_seg", "_segmentation", "_label", "_labels", "_gt")
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Item:
    """One image (one file, or one file per channel) and its mask file."""

    images: tuple[Path, ...]
    mask: Path
    channels: int = 1  # channels each image file holds, as the layout declares (a NIfTI's 4th axis)


@dataclass(frozen=True)
class Case:
    """A patient volume, or an image (or group of images) of a 2-D data set."""

    case_id: str
    items: tuple[Item, ...]


@dataclass
class Problem:
    """Something wrong with a file: ``severity`` is "error" (unusable) or "warning"."""

    severity: str
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class Layout:
    root: Path
    kind: str  # "folders" or "nnunet"
    cases: dict[str, Case]
    splits: dict[str, list[str]] | None = None  # from splits.json
    num_classes: int | None = None  # from nnU-Net's dataset.json
    problems: list[Problem] = field(default_factory=list)

    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def natural_key(s: str) -> list:
    """Sort key that puts ``x_2`` before ``x_10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def discover(root: str | Path) -> Layout:
    """Find cases under ``root``; raises PncdError only when no layout is recognised at all."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise PncdError(f"{root}: data set directory not found; pass an existing directory (or none for the synthetic default)")
    if (root / "imagesTr").is_dir() and (root / "dataset.json").is_file():
        layout = _discover_nnunet(root)
    elif (root / "images").is_dir():
        layout = _discover_folders(root)
    else:
        raise PncdError(
            f"{root}: no data set found; expected images/ with labels/ (or masks/), "
            "or an nnU-Net raw data set (imagesTr/, labelsTr/, dataset.json)"
        )
    if not layout.cases and not layout.errors():
        layout.problems.append(Problem("error", str(root), "no image/mask pairs found; the data set is empty"))
    return layout


def read_splits(root: Path) -> dict[str, list[str]] | None:
    """``splits.json`` as {"train": [...], "val": [...], "test": [...]}, or None when absent."""
    from pncd.io import read_json

    path = root / "splits.json"
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise PncdError(f"{path}: expected an object {{\"train\": [case ids], \"val\": [...], \"test\": [...]}}")
    unknown = sorted(set(data) - set(SPLIT_NAMES))
    if unknown:
        raise PncdError(f"{path}: unknown split name(s) {unknown}; use train, val and test")
    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        ids = data.get(name, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise PncdError(f"{path}: \"{name}\" must be a list of case id strings")
        for i in ids:
            if i in seen:
                raise PncdError(f"{path}: case {i!r} is listed in both {seen[i]!r} and {name!r}; a case belongs to one split")
            seen[i] = name
        out[name] = list(ids)
    return out


def _list_files(folder: Path, problems: list[Problem], exts: tuple[str, ...] = SUPPORTED_EXTS) -> dict[str, Path]:
    """Supported files of ``folder`` by stem; duplicates and unsupported files become problems."""
    by_stem: dict[str, Path] = {}
    for p in sorted(folder.iterdir(), key=lambda q: natural_key(q.name)):
        if p.name.startswith(".") or not p.is_file():
            continue
        stem, ext = split_ext(p.name)
        if ext not in exts:
            problems.append(Problem("warning", str(p), f"unsupported file type {ext or '(none)'!r}, ignored"))
            continue
        if stem in by_stem:
            problems.append(
                Problem("error", str(p), f"same name as {by_stem[stem].name}; keep one file per stem in {folder.name}/")
            )
            continue
        by_stem[stem] = p
    return by_stem


def _discover_folders(root: Path) -> Layout:
    problems: list[Problem] = []
    mask_dirs = [root / d for d in ("labels", "masks") if (root / d).is_dir()]
    if not mask_dirs:
        raise PncdError(f"{root}: images/ has no labels/ (or masks/) folder next to it; add the masks")
    if len(mask_dirs) == 2:
        raise PncdError(f"{root}: both labels/ and masks/ exist; keep the masks in one of them")
    images = _list_files(root / "images", problems)
    masks = _list_files(mask_dirs[0], problems)
    splits = read_splits(root)
    channels = declared_channels(root / "dataset.json")

    paired: dict[str, Item] = {}
    used_masks: set[str] = set()
    for stem, img in images.items():
        key = next((k for k in (stem, *(stem + s for s in MASK_SUFFIXES)) if k in masks), None)
        if key is None:
            problems.append(
                Problem("error", str(img), f"image without mask; add {mask_dirs[0].name}/{stem}{split_ext(img.name)[1]} or remove the image")
            )
            continue
        used_masks.add(key)
        paired[stem] = Item((img,), masks[key], channels)
    for key, m in masks.items():
        if key not in used_masks:
            problems.append(Problem("error", str(m), f"mask without image; add images/{key}.* or remove the mask"))

    # Group 2-D images into the cases splits.json names; volumes are always their own case.
    split_ids = sorted({i for ids in (splits or {}).values() for i in ids}, key=len, reverse=True)
    groups: dict[str, list[Item]] = {}
    for stem, item in paired.items():
        case_id = stem
        if split_ext(item.images[0].name)[1] not in NIFTI_EXTS and stem not in split_ids:
            case_id = next((c for c in split_ids if stem.startswith(c) and stem[len(c)] in "_-. "), stem)
        groups.setdefault(case_id, []).append(item)
    cases = {
        cid: Case(cid, tuple(sorted(items, key=lambda it: natural_key(it.images[0].name))))
        for cid, items in sorted(groups.items(), key=lambda kv: natural_key(kv[0]))
    }
    return Layout(root, "folders", cases, splits, None, problems)


def declared_channels(path: Path) -> int:
    """The channels per image file that the folders layout's optional ``dataset.json`` declares
    (its ``"channel_names"``: one name per channel); 1 without the file or the key."""
    from pncd.io import read_json

    if not path.is_file():
        return 1
    data = read_json(path)
    names = data.get("channel_names") if isinstance(data, dict) else None
    if names is None:
        return 1
    if not isinstance(names, (dict, list)) or not names:
        raise PncdError(f"{path}: \"channel_names\" must name each channel, e.g. {{\"0\": \"T1\", \"1\": \"T2\"}}")
    return len(names)


def _num_classes_from_dataset_json(path: Path, labels: object) -> int:
    if not isinstance(labels, dict) or not labels:
        raise PncdError(f"{path}: \"labels\" must map class names to label values, e.g. {{\"background\": 0, \"tumour\": 1}}")
    values: list[int] = []
    keys_are_ints = all(str(k).isdigit() for k in labels)
    for k, v in labels.items():
        if keys_are_ints:  # nnU-Net v1: {"0": "background", "1": "tumour"}
            values.append(int(k))
        elif isinstance(v, int):
            values.append(v)
        elif isinstance(v, list) and all(isinstance(x, int) for x in v):  # region-based labels
            values.extend(v)
        else:
            raise PncdError(f"{path}: label {k!r} has value {v!r}; expected an integer")
    return max(values) + 1


def _discover_nnunet(root: Path) -> Layout:
    from pncd.io import read_json

    problems: list[Problem] = []
    dj_path = root / "dataset.json"
    dj = read_json(dj_path)
    if not isinstance(dj, dict):
        raise PncdError(f"{dj_path}: expected a JSON object with \"labels\", \"channel_names\" and \"file_ending\"")
    num_classes = _num_classes_from_dataset_json(dj_path, dj.get("labels"))
    ending = str(dj.get("file_ending", "")).lower()
    exts = (ending,) if ending else SUPPORTED_EXTS
    if ending and ending not in SUPPORTED_EXTS:
        raise PncdError(f"{dj_path}: file_ending {ending!r} is not supported; pncd reads {', '.join(SUPPORTED_EXTS)}")
    n_channels = len(dj.get("channel_names", dj.get("modality", {})) or {}) or None

    channel_files: dict[str, dict[int, Path]] = {}
    for stem, p in _list_files(root / "imagesTr", problems, exts).items():
        m = re.fullmatch(r"(.+)_(\d{4})", stem)
        if m is None:
            problems.append(Problem("error", str(p), "nnU-Net image name lacks the channel suffix; rename it <case>_0000" + ending))
            continue
        channel_files.setdefault(m.group(1), {})[int(m.group(2))] = p
    labels_dir = root / "labelsTr"
    labels = _list_files(labels_dir, problems, exts) if labels_dir.is_dir() else {}
    if not labels_dir.is_dir():
        problems.append(Problem("error", str(labels_dir), "labelsTr/ is missing; add the training labels"))

    cases: dict[str, Case] = {}
    for cid in sorted(channel_files, key=natural_key):
        chans = channel_files[cid]
        if sorted(chans) != list(range(len(chans))):
            problems.append(Problem("error", str(chans[min(chans)]), f"case {cid} has channel files {sorted(chans)}; expected _0000 .. consecutive"))
            continue
        if n_channels is not None and len(chans) != n_channels:
            problems.append(Problem("error", str(chans[0]), f"case {cid} has {len(chans)} channel file(s) but dataset.json names {n_channels}"))
            continue
        if cid not in labels:
            problems.append(Problem("error", str(chans[0]), f"image without mask; add labelsTr/{cid}{ending or '.*'} or remove the image"))
            continue
        cases[cid] = Case(cid, (Item(tuple(chans[i] for i in range(len(chans))), labels[cid]),))
    for cid, p in labels.items():
        if cid not in channel_files:
            problems.append(Problem("error", str(p), f"mask without image; add imagesTr/{cid}_0000{ending or '.*'} or remove the mask"))
    declared = dj.get("numTraining")
    if isinstance(declared, int) and declared != len(cases):
        problems.append(Problem("warning", str(dj_path), f"numTraining is {declared} but {len(cases)} cases were found"))
    return Layout(root, "nnunet", cases, read_splits(root), num_classes, problems)
