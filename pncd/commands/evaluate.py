"""``pncd eval``'s click layer (torch-free at import, so that ``--help`` answers at once).

Its options are the fields of :class:`EvalOptions` (the keyword arguments of
:func:`pncd.evaluation.run.evaluate_run` the command line sets).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import click

from pncd.commands._options import options
from pncd.commands.config import config_option, threads_option
from pncd.data.spec import SPLITS
from pncd.optspec import cli, values_from


@dataclass
class EvalOptions:
    """What ``pncd eval RUN`` is asked: the options of :func:`pncd.evaluation.run.evaluate_run`."""

    data: str | None = field(default=None, metadata=cli("Data set (default: the one the run was trained on).",
                                                        path="dir"))
    split: str = field(default="test", metadata=cli(choices=SPLITS))
    which: str = field(default="best", metadata=cli(choices=("best", "last")))
    out: str | None = field(default=None, metadata=cli("Output directory (default: RUN/eval-SPLIT).", path="dir"))
    overlays: int = field(default=6, metadata=cli("How many overlay PNGs to write.", low=0))
    device: str = field(default="auto", metadata=cli())
    force: bool = field(default=False, metadata=cli(
        "Replace pncd's files in an existing output directory (others stay; a folder pncd did not write is refused)."))


@click.command("eval")
@config_option
@click.argument("run", type=click.Path(exists=True))
@options(EvalOptions)
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

    opts = EvalOptions(**values_from(EvalOptions, params))
    evaluate_run(params["run"], **asdict(opts), options=resolved_params(ctx),
                 echo=click.echo, warn=lambda m: click.echo(m, err=True))
