"""``pncd compare``: the click layer over :func:`pncd.apps.compare.run_compare`."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from pncd.apps.compare import ARMS, CompareRecipe, Plan
from pncd.commands.config import config_option
from pncd.errors import PncdError

_R = CompareRecipe()


@click.command("compare")
@config_option
@click.option("--teacher", required=True,
              help="A network to train as each fold's teacher (e.g. attention_unet), or existing fold teachers as a "
                   "path with {fold} (e.g. runs/cv/f{fold}/teacher).")
@click.option("--student", "students", multiple=True, required=True, help="Student network (repeat for several).")
@click.option("--data", type=click.Path(file_okay=False, exists=True), required=True, help="Data set directory.")
@click.option("--folds-file", type=click.Path(dir_okay=False), default=None,
              help="Folds file [default: folds.json or splits_final.json beside the data]; see `pncd data split`.")
@click.option("--folds", "fold_list", default=None, help="Folds to run, e.g. 0,1,2 [default: every fold of the file].")
@click.option("--arms", default="alone,pncd", show_default=True,
              help=f"Student arms, comma-separated, from {', '.join(ARMS)} (alone is required).")
@click.option("--no-pnscd-folds", default=None, help="Run the pncd-no-pnscd arm on these folds only, e.g. 0,1.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Work and report directory.")
@click.option("--size", type=click.IntRange(16), default=_R.size, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=_R.batch, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=_R.epochs, show_default=True, help="Student epochs (every arm).")
@click.option("--steps-per-epoch", type=click.IntRange(1), default=_R.steps_per_epoch, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=_R.lr, show_default=True, help="Student learning rate.")
@click.option("--teacher-epochs", type=click.IntRange(1), default=_R.teacher_epochs, show_default=True)
@click.option("--teacher-lr", type=click.FloatRange(0, min_open=True), default=_R.teacher_lr, show_default=True)
@click.option("--lesion-fraction", type=click.FloatRange(0, 1), default=_R.lesion_fraction, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=_R.seed, show_default=True, help="One seed for every run (paired).")
@click.option("--threads", type=click.IntRange(1), default=_R.threads, show_default=True, help="Torch threads of each job.")
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True, help="Folds run in parallel.")
@click.option("--distill-args", default="", help="Extra `pncd distill` flags for the distilled arms (quoted string).")
@click.option("--nproc-per-node", type=click.IntRange(1), default=None,
              help="Run each training job under torchrun with this many processes (several GPUs).")
def compare_command(config: str | None, teacher: str, students: tuple[str, ...], data: str, folds_file: str | None,
                    fold_list: str | None, arms: str, no_pnscd_folds: str | None, out: str, size: int, batch: int,
                    epochs: int, steps_per_epoch: int, lr: float, teacher_epochs: int, teacher_lr: float,
                    lesion_fraction: float, seed: int, threads: int, jobs: int, distill_args: str,
                    nproc_per_node: int | None) -> None:
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
    recipe = CompareRecipe(size=size, batch=batch, epochs=epochs, steps_per_epoch=steps_per_epoch, lr=lr,
                           lesion_fraction=lesion_fraction, seed=seed, threads=threads, teacher_epochs=teacher_epochs,
                           teacher_lr=teacher_lr, distill_args=tuple(shlex.split(distill_args)))
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
