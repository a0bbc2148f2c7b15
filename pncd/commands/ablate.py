"""``pncd ablate``: the click layer over :func:`pncd.apps.ablate.run_ablation`."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from pncd.apps.ablate import AblateOptions
from pncd.commands._options import options
from pncd.commands.config import config_option


@click.command("ablate")
@config_option
@options(AblateOptions)
def ablate_command(config: str | None, teacher: str, student: str, out: str, grid_kind: str, split: str, epochs: int, seed: int, distill_args: str) -> None:
    """Run the PNCD module ablation for one student and write ablation.md / ablation.json.

    Run again with the same --out, it continues: a row already scored with the same settings
    (the teacher's weights, student, modules and weights, epochs, seed, split, --distill-args)
    is reused, a row whose settings changed is distilled again (its run replaced). --out must
    be new or a folder pncd ablate wrote.

    \b
    Example:
      pncd ablate --teacher runs/dcsaunet --student enet --epochs 10 --out runs/ablate-enet \\
          --distill-args "--size 128 --batch 8 --lesion-fraction 0.5"
    """
    from pncd.apps.ablate import run_ablation

    def row_options(run: Path, mods: tuple[str, ...]) -> Any:
        return distill_row(teacher, student, run, mods, epochs, seed, distill_args)

    run_ablation(student, teacher, out, grid_kind, split, row_options, log=click.echo)


def distill_row(teacher: str, student: str, run: Path, mods: tuple[str, ...], epochs: int, seed: int, distill_args: str) -> Any:
    """The :class:`~pncd.distill.options.DistillRun` of one row: ``distill_args`` parsed as
    ``pncd distill`` parses them, then the row's own settings. Whether the row's run is
    continued or replaced is :func:`pncd.apps.ablate.run_ablation`'s to say (by the row's key)."""
    from pncd.commands.distill import distill_command, distill_run

    args = [*shlex.split(distill_args), "--teacher", teacher, "--student", student, "--out", str(run), "--epochs", str(epochs),
            "--seed", str(seed), "--modules", ",".join(mods) or "none"]
    with distill_command.make_context("distill", args) as ctx:
        return distill_run(ctx, ctx.params)
