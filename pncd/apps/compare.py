"""Does distillation help? Patient-level cross-validation of a student alone against the same
student distilled, paired by patient.

Per fold of a folds file (:mod:`pncd.data.folds`) the comparison trains, or reuses, the fold's
teacher, then every student arm with the same recipe and seed: ``alone`` (``pncd train``),
``pncd`` (``pncd distill``, every loss) and, if asked, ``pncd-no-pnscd`` (PMD, RMD and RD)
and ``pncd-instance`` (every loss, PNSCD as instance discrimination: ``--pnscd-form instance``).
Each run picks its best epoch on the fold's val cases and is scored once on the fold's held-out
test cases, so every patient of the data set is scored exactly once per arm, by a model that
never saw it and was never tuned on it.

The statistics pair each patient's Dice across arms: the mean of ``arm - alone`` over all
patients with a 95% percentile bootstrap interval over patients, the Wilcoxon signed-rank p, the
share of the teacher-student gap closed (``(arm - alone) / (teacher - alone)`` of the means) and
a per-fold table. The verdict follows the interval: above 0 "helped", below 0 "hurt", else "no
measurable effect".

Jobs run as ``pncd`` child processes (one log each under ``OUT/logs``), so a crash or a kill
ends a job, not the comparison; a job whose scores exist is reused, an interrupted run continues
from its last epoch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pncd.errors import PncdError, RunFailed
from pncd.optspec import cli

ARMS = ("alone", "pncd", "pncd-no-pnscd", "pncd-instance")
ARM_MODULES = {"pncd": "pmd,rmd,rd,pnscd", "pncd-no-pnscd": "pmd,rmd,rd", "pncd-instance": "pmd,rmd,rd,pnscd"}
ARM_ARGS = {"pncd-instance": ("--pnscd-form", "instance")}  # PNSCD as instance discrimination
SCORES = "scores.json"


@dataclass(kw_only=True)
class CompareOptions:
    """What ``pncd compare`` compares, on which folds, and where (its recipe: :class:`CompareRecipe`)."""

    teacher: str = field(metadata=cli(
        "A network to train as each fold's teacher (e.g. attention_unet), or existing fold teachers as a path with "
        "{fold} (e.g. runs/cv/f{fold}/teacher)."))
    students: tuple[str, ...] = field(metadata=cli("Student network (repeat for several).", flag="--student",
                                                   multiple=True, required=True))
    data: str = field(metadata=cli("Data set directory.", path="dir", exists=True))
    folds_file: str | None = field(default=None, metadata=cli(
        "Folds file [default: folds.json or splits_final.json beside the data]; see `pncd data split`.", path="file"))
    fold_list: str | None = field(default=None, metadata=cli(
        "Folds to run, e.g. 0,1,2 [default: every fold of the file].", flag="--folds"))
    arms: str = field(default="alone,pncd", metadata=cli(
        f"Student arms, comma-separated, from {', '.join(ARMS)} (alone is required)."))
    no_pnscd_folds: str | None = field(default=None, metadata=cli(
        "Run the pncd-no-pnscd arm on these folds only, e.g. 0,1."))
    out: str = field(metadata=cli("Work and report directory.", path="dir"))
    jobs: int = field(default=1, metadata=cli("Folds run in parallel.", low=1))
    nproc_per_node: int | None = field(default=None, metadata=cli(
        "Run each training job under torchrun with this many processes (several GPUs).", low=1))


@dataclass
class CompareRecipe:
    """What every run of the comparison shares (the teacher's own schedule beside it)."""

    size: int = field(default=128, metadata=cli(low=16))
    batch: int = field(default=8, metadata=cli(low=1))
    epochs: int = field(default=15, metadata=cli("Student epochs (every arm).", low=1))
    steps_per_epoch: int = field(default=100, metadata=cli(low=1))
    lesion_fraction: float = field(default=0.5, metadata=cli(low=0, high=1))
    lr: float = field(default=1e-3, metadata=cli("Student learning rate.", low=0, low_open=True))
    seed: int = field(default=0, metadata=cli("One seed for every run (paired).", low=0))
    threads: int = field(default=1, metadata=cli("Torch threads of each job.", low=1))
    teacher_epochs: int = field(default=60, metadata=cli(low=1))
    teacher_lr: float = field(default=1e-3, metadata=cli(low=0, low_open=True))
    # extra `pncd distill` flags (e.g. --pnscd-form instance); one quoted string on the command line
    distill_args: tuple[str, ...] = field(default=(), metadata=cli(
        "Extra `pncd distill` flags for the distilled arms (quoted string).", default=""))

    def common(self) -> list[str]:
        return ["--size", str(self.size), "--batch", str(self.batch), "--lesion-fraction", str(self.lesion_fraction),
                "--seed", str(self.seed), "--threads", str(self.threads)]


@dataclass
class Job:
    fold: int
    name: str  # teacher | STUDENT-ARM
    student: str | None
    arm: str | None
    out: Path

    @property
    def label(self) -> str:
        return f"fold {self.fold} {self.name}"


@dataclass
class Plan:
    data: str
    folds_file: str
    folds: list[int]
    students: list[str]
    arms: list[str]
    teacher: str  # a network name (trained per fold) or a run path with {fold}
    out: Path
    recipe: CompareRecipe = field(default_factory=CompareRecipe)
    no_pnscd_folds: list[int] | None = None  # folds that run the pncd-no-pnscd arm (None: all)

    def teacher_dir(self, fold: int) -> Path:
        if "{fold}" in self.teacher:
            return Path(self.teacher.format(fold=fold))
        return self.out / f"f{fold}" / "teacher"

    def trains_teacher(self) -> bool:
        return "{fold}" not in self.teacher

    def jobs(self) -> list[Job]:
        out = []
        for f in self.folds:
            out.append(Job(f, "teacher", None, None, self.teacher_dir(f)))
            for st in self.students:
                for arm in self.arms:
                    if arm == "pncd-no-pnscd" and self.no_pnscd_folds is not None and f not in self.no_pnscd_folds:
                        continue
                    out.append(Job(f, f"{st}-{arm}", st, arm, self.out / f"f{f}" / f"{st}-{arm}"))
        return out


def check_plan(plan: Plan) -> None:
    """Errors that need no training: one line each."""
    from pncd.data.folds import read_folds

    folds = read_folds(Path(plan.folds_file))
    bad = [f for f in plan.folds if not 0 <= f < len(folds)]
    if bad:
        raise PncdError(f"{plan.folds_file}: fold {bad[0]} does not exist; it holds folds 0..{len(folds) - 1}")
    unknown = [a for a in plan.arms if a not in ARMS]
    if unknown:
        raise PncdError(f"--arms: unknown arm {unknown[0]!r}; use {', '.join(ARMS)}")
    if "alone" not in plan.arms:
        raise PncdError("--arms must include alone: every difference is paired against the student alone")
    if not plan.trains_teacher():
        for f in plan.folds:
            cfg = plan.teacher_dir(f) / "config.json"
            if not cfg.is_file():
                raise PncdError(f"{plan.teacher_dir(f)}: no teacher run for fold {f}; train it, or give a network name "
                                "as --teacher to train one per fold")
            data = json.loads(cfg.read_text()).get("data") or {}
            if data.get("fold") != f:
                raise PncdError(f"{cfg}: this teacher was trained on fold {data.get('fold')}, not fold {f}; a teacher "
                                "that saw the fold's test patients would leak them")


def command(plan: Plan, job: Job, pncd: list[str]) -> list[str]:
    """The ``pncd`` command line of ``job`` (``pncd``: how to start pncd, e.g. [python, -m, pncd.cli])."""
    r = plan.recipe
    data = ["--data", plan.data, "--folds-file", plan.folds_file, "--fold", str(job.fold)]
    if job.name == "teacher":
        return [*pncd, "train", "--model", plan.teacher, *data, *r.common(), "--epochs", str(r.teacher_epochs),
                "--steps-per-epoch", str(r.steps_per_epoch), "--lr", str(r.teacher_lr), "--out", str(job.out)]
    sched = ["--epochs", str(r.epochs), "--steps-per-epoch", str(r.steps_per_epoch), "--lr", str(r.lr)]
    if job.arm == "alone":
        return [*pncd, "train", "--model", str(job.student), *data, *r.common(), *sched, "--out", str(job.out)]
    return [*pncd, "distill", "--teacher", str(plan.teacher_dir(job.fold)), "--student", str(job.student), *data,
            *r.common(), *sched, "--modules", ARM_MODULES[str(job.arm)], *r.distill_args,
            *ARM_ARGS.get(str(job.arm), ()), "--out", str(job.out)]


def scores_path(plan: Plan, job: Job) -> Path:
    """Where a job's scores go: in its run, except for a reused teacher (not compare's to write in)."""
    if job.name == "teacher" and not plan.trains_teacher():
        return plan.out / f"f{job.fold}" / f"teacher.{SCORES}"
    return job.out / SCORES


def run_job(plan: Plan, job: Job, pncd: list[str], log: Callable[[str], None]) -> dict[str, Any]:
    """Train (or continue) and score one job; returns its scores. Reuses finished scores."""
    done = scores_path(plan, job)
    if done.is_file():
        return json.loads(done.read_text())
    logs = plan.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    logfile = logs / f"f{job.fold}-{job.name}.log"
    t0 = time.time()
    if not (job.out / "eval-test" / "metrics.json").is_file():
        if job.name == "teacher" and not plan.trains_teacher():
            raise RunFailed(f"{job.out}: the fold's teacher run has no scores and is not pncd compare's to train")
        cmd = command(plan, job, pncd)
        if (job.out / "last_state.pt").is_file():
            cmd.append("--resume")
        elif job.out.exists():
            cmd.append("--force")  # a first epoch that never finished
        log(f"[start] {job.label}")
        _run(cmd, logfile, job)
        _run([*default_pncd(), "eval", str(job.out), "--split", "test", "--overlays", "0", "--force",
              "--threads", str(plan.recipe.threads)], logfile, job)
    metrics = json.loads((job.out / "eval-test" / "metrics.json").read_text())
    scores = {"fold": job.fold, "name": job.name, "student": job.student, "arm": job.arm,
              "dice": {c["case"]: c["dice"] for c in metrics["per_case"]},
              "mean_dice": metrics["summary"]["dice"], "seconds": round(time.time() - t0, 1)}
    from pncd.io import write_json

    write_json(done, scores)
    log(f"[done]  {job.label}: per-patient Dice {scores['mean_dice']:.4f} ({len(scores['dice'])} patients)")
    return scores


def _run(cmd: list[str], logfile: Path, job: Job) -> None:
    with open(logfile, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise RunFailed(f"{job.label} failed (exit {proc.returncode}): {tail[0]} (full log: {logfile})")


def default_pncd() -> list[str]:
    return [sys.executable, "-m", "pncd.cli"]


def run_compare(plan: Plan, jobs_in_parallel: int = 1, pncd: list[str] | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) every job, then write ``compare.json``, ``compare.md`` and
    ``compare.png`` into ``plan.out``; returns the summary."""
    from pncd.apps.compare_report import summarize, write_report

    check_plan(plan)
    pncd = pncd or default_pncd()
    from pncd.io import claim_dir

    # a new folder, or one pncd compare wrote: never a data set, a run or a user's folder
    claim_dir(plan.out, "compare", names=("logs", "compare.json", "compare.md", "compare.png", *(f"f{f}" for f in plan.folds)),
              protect=(plan.data, plan.folds_file))
    jobs = plan.jobs()
    log(f"pncd compare: {len(jobs)} jobs ({len(plan.folds)} folds x teacher + {', '.join(plan.students)} "
        f"x {', '.join(plan.arms)}); finished ones are reused")
    by_fold: dict[int, list[Job]] = {}
    for j in jobs:
        by_fold.setdefault(j.fold, []).append(j)

    def fold_jobs(fold: int) -> list[dict[str, Any]]:
        return [run_job(plan, j, pncd, log) for j in by_fold[fold]]  # the teacher first: the arms need it

    with ThreadPoolExecutor(max_workers=max(1, jobs_in_parallel)) as pool:
        results = [s for fold_scores in pool.map(fold_jobs, plan.folds) for s in fold_scores]
    summary = summarize(results, plan.students, plan.arms)
    summary["plan"] = {"data": plan.data, "folds_file": plan.folds_file, "folds": plan.folds, "teacher": plan.teacher,
                       "students": plan.students, "arms": plan.arms, "recipe": asdict(plan.recipe)}
    write_report(plan.out, summary)
    for line in summary["verdicts"]:
        log(line)
    return summary
