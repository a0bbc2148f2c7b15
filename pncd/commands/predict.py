"""``pncd predict``: the command line of :func:`pncd.apps.predict.run_predict` (it parses and prints).

Its options are generated from :class:`pncd.apps.predict.PredictOptions` (:mod:`pncd.commands._options`);
``--config`` is the command's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pncd.apps.predict import PredictOptions
from pncd.commands._options import options, stack
from pncd.commands.config import config_option


@click.command("predict", context_settings={"max_content_width": 100})
@config_option
@stack(click.argument("model", type=click.Path(path_type=Path)),
       click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path)),
       options(PredictOptions))
def predict_command(model: Path, inputs: tuple[Path, ...], config: str | None = None, **params: Any) -> None:
    """Masks for images and NIfTI volumes (INPUT: files, or folders whose files are read, not their
    subfolders) from MODEL: a run folder (pncd train/distill; its best checkpoint, on torch) or an
    artifact folder (pncd export; on its runtime, as pncd bench runs it).

    Each input is preprocessed as training reads a data set (the run's or the manifest's size,
    channels and normalisation; volumes sliced along their last axis), and its mask is written
    at the input's size (resized back with nearest neighbour): a NIfTI volume gives a NIfTI mask
    of the same name, shape, affine and header (uint8); a PNG, JPEG, TIFF or BMP image gives a
    PNG (NAME.png; a multi-page TIFF: NAME.tif) whose pixel values are the class index: 0 for
    background, 1 for the lesion (0/1 for a binary model), 2... for further classes.
    --out also gets predictions.json: per input its mask, shape, voxels per class, model,
    runtime and precision. Nothing is written when an input is missing, unreadable or has
    channels the model does not take.

    \b
    Examples:
      pncd predict runs/enet-pncd path/to/lgg-flair/images --out masks/enet
      pncd predict exports/enet-ov-fp32 scan1.nii.gz slice.png --out masks/ov --batch 16 --threads 2
      pncd predict exports/enet-ort-fp32 photos/ --size-policy native --out masks/photos
    """
    from pncd.apps.predict import run_predict

    opts = PredictOptions.from_params(params)
    result = run_predict(model, inputs, opts, log=lambda m: click.echo(m, err=True))
    rows = result["predictions"]
    fg = sum(sum(v for k, v in r["voxels"].items() if k != "0") for r in rows)
    click.echo(f"{len(rows)} mask(s) ({fg} foreground voxels) -> {Path(opts.out) / 'predictions.json'}")
