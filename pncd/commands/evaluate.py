"""``pncd eval``'s click layer (torch-free at import, so that ``--help`` answers at once)."""

from __future__ import annotations

from typing import Any

import click

from pncd.commands.config import config_option, threads_option


@click.command("eval")
@config_option
@click.argument("run", type=click.Path(exists=True))
@click.option("--data", type=click.Path(file_okay=False), default=None, help="Data set (default: the one the run was trained on).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test", "all"]))
@click.option("--which", default="best", show_default=True, type=click.Choice(["best", "last"]))
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output directory (default: RUN/eval-SPLIT).")
@click.option("--overlays", type=click.IntRange(0), default=6, show_default=True, help="How many overlay PNGs to write.")
@click.option("--device", default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Replace pncd's files in an existing output directory (others stay; a "
              "folder pncd did not write is refused).")
@threads_option
@click.pass_context
def eval_command(ctx: click.Context, **params: Any) -> None:
    """Evaluate a run on a split: metrics.json (per case and summary) and overlay PNGs.

    \b
    Example:
      pncd eval runs/unet --split test
      pncd eval runs/enet-pncd --data path/to/lgg-flair --split val --out reports/enet-val
    """
    from pncd.commands.config import resolved_params
    from pncd.evaluation.run import evaluate_run

    p = dict(params)
    p.pop("config", None)
    p.pop("threads", None)
    evaluate_run(p.pop("run"), p.pop("split"), **p, options=resolved_params(ctx),
                 echo=click.echo, warn=lambda m: click.echo(m, err=True))
