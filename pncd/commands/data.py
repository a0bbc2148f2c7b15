"""``pncd data``: inspect a data set (``check``) and write the synthetic one (``synth``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from pncd.commands._options import options
from pncd.commands.config import config_option
from pncd.errors import PncdError, RunFailed
from pncd.options import SEED_MAX
from pncd.optspec import cli

_FORCE = "Replace pncd's files in an existing OUT (others stay; a folder pncd did not write is refused)."


@dataclass
class CheckOptions:
    """``pncd data check DIRECTORY``."""

    num_classes: int | None = field(default=None, metadata=cli(
        "Number of classes incl. background [default: dataset.json's labels, else 2].", low=2))
    split_seed: int = field(default=0, metadata=cli("Seed of the case-level split used when there is no splits.json."))
    json_path: Path | None = field(default=None, metadata=cli(
        "Also write the full report as JSON to this file (written atomically; it replaces only an earlier data-check "
        "report, and is never written inside DIRECTORY).", flag="--json", path="file"))


@dataclass
class SynthOptions:
    """``pncd data synth OUT`` (the arguments of :func:`pncd.data.synthetic.generate`)."""

    cases: int = field(default=24, metadata=cli("Number of cases (volumes).", low=1))
    slices: int = field(default=8, metadata=cli("Slices per case.", low=1))
    size: int = field(default=128, metadata=cli("Slice width and height in pixels.", low=16))
    seed: int = field(default=0, metadata=cli("Random seed (same seed, same files)."))
    force: bool = field(default=False, metadata=cli(_FORCE))


@dataclass
class SplitOptions:
    """``pncd data split DIRECTORY``: k folds of its cases (:mod:`pncd.data.folds`)."""

    k: int = field(default=5, metadata=cli("Number of folds.", flag="--folds", low=2))
    seed: int = field(default=0, metadata=cli("Seed of the assignment (same data, folds and seed: same file).",
                                              low=0, high=SEED_MAX))
    val_fraction: float = field(default=0.15, metadata=cli(
        "Share of each fold's training cases that selects the best epoch.", low=0, high=1, low_open=True,
        high_open=True))
    num_classes: int = field(default=2, metadata=cli(
        "Classes incl. background (masks are read to measure lesion burden).", low=2))
    out: Path | None = field(default=None, metadata=cli(
        "Folds file to write [default: DIRECTORY/folds.json, or DIRECTORY/splits_final.json with --nnunet].",
        path="file"))
    nnunet: bool = field(default=False, metadata=cli(
        "Write nnU-Net v2's splits_final.json format (its 'val' = the held-out fold)."))
    force: bool = field(default=False, metadata=cli("Replace an existing folds file (never any other file)."))


@click.group(name="data")
def data_group() -> None:
    """Inspect data sets and write the built-in synthetic data set.

    \b
    Examples:
      pncd data check path/to/lgg-flair
      pncd data synth data/synthetic --cases 24 --slices 8 --size 128
    """


@data_group.command(name="check")
@config_option
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@options(CheckOptions)
def check_command(config: str | None, directory: Path, num_classes: int | None, split_seed: int,
                  json_path: Path | None) -> None:
    """Report cases, slices, image sizes, channels, class balance, empty masks, split sizes and
    every problem found (with its file) in the data set DIRECTORY. Exits non-zero when any
    problem is an error (unreadable or corrupt file, e.g. a .nii.gz that fails its gzip CRC check,
    image without mask, size mismatch, labels out of range, case in splits.json missing on disk,
    empty data set, a train or val split with no case: pncd train would refuse it).

    \b
    Layouts: images/ + labels/ (or masks/) paired by stem (PNG, JPEG, TIFF, BMP, NIfTI), or an
    nnU-Net raw data set (imagesTr/, labelsTr/, dataset.json).

    \b
    Examples:
      pncd data check path/to/lgg-flair
      pncd data check my-data --num-classes 3 --json report.json
    """
    from pncd.data.check import check_dataset, format_report
    from pncd.io import write_json

    if json_path is not None:
        check_report_target(json_path, directory)  # before any work: nothing is read or written when refused
    report = check_dataset(directory, num_classes=num_classes, split_seed=split_seed)
    click.echo(format_report(report))
    if json_path is not None:
        write_json(json_path, {"schema": CHECK_SCHEMA, **report})
        click.echo(f"wrote {json_path}")
    if not report["ok"]:
        raise RunFailed(f"{directory}: {report['errors']} error(s) found; fix the files listed above")


CHECK_SCHEMA = "pncd.data-check/1"  # the key that tells a data-check report from any other file
_LEGACY_CHECK_KEYS = frozenset({"root", "layout", "splits", "problems", "errors", "warnings", "ok"})


def check_report_target(json_path: Path, directory: Path) -> None:
    """``--json FILE`` is written only outside the data set DIRECTORY (symbolic links resolved),
    and replaces only a previous data-check report: a PncdError (exit 2, nothing written) else."""
    import json

    from pncd.io import check_parents

    check_parents(json_path, "--json")
    target, root = json_path.resolve(), directory.resolve()
    if root == target or root in target.parents:
        raise PncdError(f"--json {json_path} is inside the data set {directory} being checked; write the report "
                        "elsewhere (nothing was written)")
    if not json_path.exists() and not json_path.is_symlink():
        return
    try:
        doc = json.loads(json_path.read_text()) if json_path.is_file() else None
    except (OSError, ValueError):
        doc = None
    # a report of this pncd carries CHECK_SCHEMA; one of an older pncd is known by its keys
    if isinstance(doc, dict) and (doc.get("schema") == CHECK_SCHEMA or
                                  ("schema" not in doc and _LEGACY_CHECK_KEYS <= doc.keys())):
        return
    raise PncdError(f"--json {json_path} exists and is not a pncd data-check report; it replaces only such a "
                    "report: choose another file or remove it yourself (nothing was written)")


@data_group.command(name="synth")
@config_option
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@options(SynthOptions)
def synth_command(config: str | None, out: Path, cases: int, slices: int, size: int, seed: int, force: bool) -> None:
    """Write a synthetic FLAIR-like data set (brain phantoms with one irregular lesion each) to
    OUT: images/*.nii.gz, labels/*.nii.gz and splits.json. The built-in default data set is the
    same generator with the default options.

    \b
    Example:
      pncd data synth data/synthetic --cases 24 --slices 8 --size 128 --seed 0
    """
    from pncd.data.synthetic import generate

    path = generate(out, n_cases=cases, n_slices=slices, size=size, seed=seed, force=force)
    click.echo(f"wrote {cases} cases x {slices} slices at {size}x{size} to {path}")


@data_group.command(name="split")
@config_option
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@options(SplitOptions)
def split_command(config: str | None, directory: Path, k: int, seed: int, val_fraction: float, num_classes: int,
                  out: Path | None, nnunet: bool, force: bool) -> None:
    """Write patient-level k-fold cross-validation splits of the data set DIRECTORY, stratified by
    lesion burden: in fold I, the I-th group of cases is held out (test), a share of the rest
    selects the best epoch (val), the others are trained on. Every case is held out once.

    \b
    Train or distil on a fold with `--fold I` (the file beside the data is found by itself;
    elsewhere add --folds-file FILE); the run records its fold, and eval, export (calibration
    and parity) and bench of that run use the same fold's splits. `pncd compare` runs them all.

    \b
    Examples:
      pncd data split path/to/lgg-flair --folds 5 --seed 0 --out lgg-folds.json
      pncd train --model enet --data path/to/lgg-flair --folds-file lgg-folds.json --fold 0 --out runs/enet-f0
      pncd data split my-nnunet-set --folds 5 --nnunet          # DIR/splits_final.json
    """
    from pncd.data import folds as F
    from pncd.data.layout import discover
    from pncd.io import write_json

    target = out or directory / (F.NNUNET_FILE if nnunet else F.FOLDS_FILE)
    if target.exists():
        if not force:
            raise PncdError(f"{target}: exists; pass --force to replace it, or name another file with --out")
        try:
            F.read_folds(target)
        except PncdError:
            raise PncdError(f"{target}: is not a folds file; --force replaces only a folds file, choose another --out") from None
    layout = discover(directory)
    errors = layout.errors()
    if errors:
        raise PncdError(f"{directory}: {len(errors)} problem(s), first {errors[0]}; run `pncd data check {directory}`")
    burden = F.lesion_burden(layout, num_classes)
    folds = F.make_folds(list(layout.cases), burden, k, seed, val_fraction)
    write_json(target, F.nnunet_document(folds) if nnunet else F.folds_document(folds, seed, val_fraction))
    for i, f in enumerate(folds):
        held = sum(burden[c] > 0 for c in f["test"])
        click.echo(f"fold {i}: train {len(f['train'])}, val {len(f['val'])}, test {len(f['test'])} case(s) "
                   f"({held} with lesion; {sum(burden[c] for c in f['test'])} lesion voxels)")
    click.echo(f"wrote {target}")
