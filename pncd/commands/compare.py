"""``pncd compare``: the click layer over :func:`pncd.apps.compare.run_compare`."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from pncd.apps.compare import CompareOptions, CompareRecipe, Plan
from pncd.commands._options import options
from pncd.commands.config import config_option
from pncd.errors import PncdError
from pncd.optspec import values_from


@click.command("compare")
@config_option
@options(CompareOptions, skip=("jobs", "nproc_per_node"))
@options(CompareRecipe, skip=("distill_args",))
@options(CompareOptions, only=("jobs",))
@options(CompareRecipe, only=("distill_args",))
@options(CompareOptions, only=("nproc_per_node",))
def compare_command(config: str | None, teacher: str, students: tuple[str, ...], data: str, folds_file: str | None,
                    fold_list: str | None, arms: str, no_pnscd_folds: str | None, out: str, jobs: int,
                    nproc_per_node: int | None, **params: Any) -> None:
    """Answer "does distillation help?" by patient-level cross-validation: per fold, the fold's
    teacher, each student alone and each student distilled (same recipe and seed), every
    held-out patient scored once. Prints and writes (OUT/compare.json, compare.md, compare.png)
    the paired per-patient difference with its 95% bootstrap CI and Wilcoxon p, the share of the
    teacher-student gap closed, a per-fold table, and one verdict per arm: helped, no measurable
    effect, or hurt.

    Resumable: finished jobs are reused and an interrupted run continues (kill it at any time and
    run the same command again). Each job's output goes to OUT/logs/.

    \b
    Examples:
      pncd data split DATA --folds 5 --out folds.json
      pncd compare --teacher attention_unet --student enet --student mobilenetv2 --data DATA \\
          --folds-file folds.json --arms alone,pncd,pncd-no-pnscd --no-pnscd-folds 0,1 --out runs/cv
      pncd compare --teacher 'runs/cv/f{fold}/teacher' --student enet --data DATA --folds-file folds.json \\
          --folds 0,1 --epochs 5 --out runs/cv-quick
    """
    from pncd.apps.compare import default_pncd, run_compare
    from pncd.data.folds import find_folds_file, read_folds

    folds_path = find_folds_file(Path(data), folds_file).resolve()
    n_folds = len(read_folds(folds_path))
    chosen = _ints(fold_list, "--folds") if fold_list else list(range(n_folds))
    recipe = CompareRecipe(**{**values_from(CompareRecipe, params),
                              "distill_args": tuple(shlex.split(params["distill_args"]))})
    teacher_arg = str(Path(teacher).resolve()) if "{fold}" in teacher else teacher
    plan = Plan(data=str(Path(data).resolve()), folds_file=str(folds_path), folds=chosen, students=list(students),
                arms=[a.strip() for a in arms.split(",") if a.strip()], teacher=teacher_arg, out=Path(out), recipe=recipe,
                no_pnscd_folds=_ints(no_pnscd_folds, "--no-pnscd-folds") if no_pnscd_folds else None)
    pncd = default_pncd()
    if nproc_per_node:
        import shutil

        torchrun = shutil.which("torchrun")
        if torchrun is None:
            raise PncdError("--nproc-per-node needs torchrun (it comes with torch); put it on PATH")
        pncd = [torchrun, "--nproc-per-node", str(nproc_per_node), "-m", "pncd.cli"]
    run_compare(plan, jobs_in_parallel=jobs, pncd=pncd, log=click.echo)


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise PncdError(f"{flag} {text!r}: give fold numbers separated by commas, e.g. 0,1,2") from None
