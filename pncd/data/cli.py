"""``pncd data``: inspect a data set (``check``) and write the synthetic one (``synth``)."""

from __future__ import annotations

from pathlib import Path

import click

from pncd.config import config_option
from pncd.errors import RunFailed


@click.group(name="data")
def data_group() -> None:
    """Inspect data sets and write the built-in synthetic data set.

    \b
    Examples:
      pncd data check ../shared/data/lgg-flair
      pncd data synth data/synthetic --cases 24 --slices 8 --size 128
    """


@data_group.command(name="check")
@config_option
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--num-classes", type=click.IntRange(min=2), default=None,
              help="Number of classes incl. background [default: dataset.json's labels, else 2].")
@click.option("--split-seed", type=int, default=0, show_default=True,
              help="Seed of the case-level split used when there is no splits.json.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the full report as JSON to this file (written atomically).")
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
      pncd data check ../shared/data/lgg-flair
      pncd data check my-data --num-classes 3 --json report.json
    """
    from pncd.data.check import check_dataset, format_report
    from pncd.io import write_json

    report = check_dataset(directory, num_classes=num_classes, split_seed=split_seed)
    click.echo(format_report(report))
    if json_path is not None:
        write_json(json_path, report)
        click.echo(f"wrote {json_path}")
    if not report["ok"]:
        raise RunFailed(f"{directory}: {report['errors']} error(s) found; fix the files listed above")


@data_group.command(name="synth")
@config_option
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--cases", type=click.IntRange(min=1), default=24, show_default=True, help="Number of cases (volumes).")
@click.option("--slices", type=click.IntRange(min=1), default=8, show_default=True, help="Slices per case.")
@click.option("--size", type=click.IntRange(min=16), default=128, show_default=True, help="Slice width and height in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same files).")
@click.option("--force", is_flag=True, help="Replace pncd's files in an existing OUT (others stay; a folder pncd "
              "did not write is refused).")
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
