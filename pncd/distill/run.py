"""``distill(DistillRun) -> RunResult``: a frozen teacher distilled into a student (``pncd distill``).

    from pncd.distill.options import DistillOptions, DistillRun
    from pncd.distill.run import distill
    from pncd.options import TrainOptions

    result = distill(DistillRun(teacher="runs/teacher", student="enet", out="runs/enet-pncd",
                                distill=DistillOptions(weights={"pmd": 0.1, "pnscd": 0.1}),
                                train=TrainOptions(epochs=20, clip_grad_norm=5.0)))

Data options left None in ``run.data`` are taken from the teacher run, so the student sees the
same data. The command line (:mod:`pncd.commands.distill`) builds the same :class:`DistillRun`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


from pncd.distill.options import DistillRun
from pncd.console import warn
from pncd.errors import PncdError
from pncd.options import RunResult


def distill(run: DistillRun, *, record: dict[str, Any] | None = None) -> RunResult:
    """Distil ``run.teacher`` into a new ``run.student`` in ``run.out`` (or continue it:
    ``run.resume``). ``record``: the options config.json records (default: ``run.params()``
    with the teacher's path and the data options resolved; the command line passes its own)."""
    from pncd.outlock import is_main_process, out_lock
    from pncd.training.run import apply_run_threads

    run.check()
    run.distill.check()
    if run.strict and not run.student_reference:
        raise PncdError("--strict compares the teacher with a run of the student alone: pass --student-reference RUN")
    apply_run_threads(run.threads)
    # one process per --out, from before the teacher is loaded to the end (resume and --force too)
    with out_lock(run.out, "pncd distill", enabled=is_main_process()):
        return _distill(run, record)


def _distill(run: DistillRun, record: dict[str, Any] | None) -> RunResult:
    from pncd import models
    from pncd.distill.engine import DistillTrainer
    from pncd.distill.teacher import check_teacher_dice, load_teacher
    from pncd.outlock import is_main_process
    from pncd.rundir import incomplete_warning, prepare_out, run_progress
    from pncd.runtime import resolve_device, seed_everything
    from pncd.training.run import check_size, fit_run

    device = resolve_device(run.train.device)
    t_model, t_cfg = load_teacher(run.teacher, run.teacher_weights, device)
    if t_cfg is not None and is_main_process():  # a teacher run stopped early: say so (pncd.rundir)
        stopped = incomplete_warning(run.teacher, run_progress(run.teacher, t_cfg), "distilling from")
        if stopped:
            warn(stopped)
    data = run.data.resolved(t_cfg["data"] if t_cfg is not None else None)
    spec = data.spec()
    if t_cfg is not None:
        for key in ("channels", "num_classes"):
            if t_cfg["data"][key] != getattr(spec, key):
                raise PncdError(f"--teacher {run.teacher} was trained with {key}={t_cfg['data'][key]}, not {getattr(spec, key)}")
    source: dict[str, Any] = {"teacher": str(run.teacher), "weights": run.teacher_weights,
                              "model": (t_cfg or {}).get("model", {}).get("name")}
    teacher_dir = Path(run.teacher).resolve() if Path(run.teacher).exists() else None
    if run.check_teacher and not run.resume:
        source["check"] = check_teacher_dice(t_model, run.teacher if t_cfg is not None else None, spec, device,
                                             max(run.train.batch, 16), run.student_reference, run.strict)
    out = prepare_out(run.out, run.resume, run.force, protect=(run.data.data, teacher_dir))
    seed_everything(run.train.seed)  # the student's initial weights depend on the seed too
    s_model = models.create(run.student, in_channels=spec.channels, num_classes=spec.num_classes)
    check_size(s_model, spec.size)
    if record is None:  # recorded absolute and resolved, so that --resume works from any directory
        record = dataclasses.replace(run, data=data, teacher=str(teacher_dir or run.teacher)).params()
    trainer = DistillTrainer(s_model, t_model, run.distill, source, spec, run.train_options(), out, resume=run.resume,
                             command_params=record, on_step=run.on_step)
    return fit_run(trainer)
