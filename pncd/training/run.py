"""``train(TrainRun) -> RunResult``: one network trained alone (``pncd train``, a teacher or a
student baseline), with the paper's recipe (see :mod:`pncd.training.loop` for the loop).

    from pncd.options import DataOptions, TrainOptions, TrainRun
    from pncd.training.run import train

    result = train(TrainRun(model="enet", out="runs/enet", data=DataOptions(size=64),
                            train=TrainOptions(epochs=5, steps_per_epoch=50)))
    result.best_val_dice

The command line (:mod:`pncd.commands.training`) builds the same :class:`TrainRun` from its
flags; both write the same run directory.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from torch import nn

from pncd.errors import PncdError
from pncd.options import DataOptions, RunResult, TrainOptions, TrainRun
from pncd.rundir import RUN_FILES, prepare_out, staging_dir
from pncd.runlog import TermMonitor
from pncd.training.loop import EpochSampler, Trainer


def check_size(model: nn.Module, size: int) -> None:
    multiple = getattr(model, "size_multiple", 16)
    if size % multiple:
        name = getattr(model, "pncd_spec")["name"]
        raise PncdError(f"--size {size} does not suit {name}: use a multiple of {multiple} (e.g. {max(multiple, size // multiple * multiple)})")


def apply_run_threads(threads: int | None) -> None:
    """A run's ``threads`` (None: leave torch's setting alone; the CLI applies its --threads itself)."""
    if threads is not None:
        from pncd.runtime import apply_threads

        apply_threads(threads, echo=False)


def fit_run(trainer: Trainer) -> RunResult:
    """Run ``trainer`` to the end (DDP torn down after) and say what it achieved."""
    from pncd.runtime import shutdown_distributed

    try:
        last = trainer.fit()
    finally:
        shutdown_distributed()
    best = trainer.best
    return RunResult(out=trainer.final_out, best_val_dice=best if math.isfinite(best) and best >= 0 else None,
                     epochs=max(trainer.start_epoch, trainer.opts.epochs), last_epoch=last)


def train(run: TrainRun, *, record: dict[str, Any] | None = None) -> RunResult:
    """Train ``run.model`` into ``run.out`` (or continue it: ``run.resume``; replace it:
    ``run.force``). ``record``: the options config.json records (default: ``run.params()``
    with the data options resolved; the command line passes its own, --config included)."""
    from pncd.outlock import is_main_process, out_lock

    run.check()
    apply_run_threads(run.threads)
    # one process per --out, from before it is looked at to the end (resume and --force too)
    with out_lock(run.out, "pncd train", enabled=is_main_process()):
        return _train(run, record)


def _train(run: TrainRun, record: dict[str, Any] | None) -> RunResult:
    from pncd import models
    from pncd.runtime import seed_everything

    spec = run.data.spec()
    out = prepare_out(run.out, run.resume, run.force, protect=(run.data.data,))
    kw = {"pretrained": run.pretrained} if run.pretrained else {}
    seed_everything(run.train.seed)  # the initial weights depend on the seed too
    model = models.create(run.model, in_channels=spec.channels, num_classes=spec.num_classes, **kw)
    getattr(model, "pncd_spec").pop("pretrained", None)  # the weights are in the run; later stages need no file
    check_size(model, spec.size)
    params = dataclasses.replace(run, data=run.data.resolved()).params() if record is None else record
    return fit_run(Trainer(model, spec, run.train_options(), out, resume=run.resume, command_params=params, on_step=run.on_step))


__all__ = ["DataOptions", "EpochSampler", "RUN_FILES", "RunResult", "TermMonitor", "TrainOptions", "TrainRun", "Trainer",
           "check_size", "fit_run", "prepare_out", "staging_dir", "train"]
