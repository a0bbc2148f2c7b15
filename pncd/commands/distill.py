"""``pncd distill``'s click layer (torch-free at import, so that ``--help`` answers at once;
the engine, :mod:`pncd.distill.engine`, is imported when the command runs). Its options are
generated from :class:`pncd.distill.options.DistillRun` and :class:`~pncd.distill.options.DistillOptions`
(and those it shares with ``pncd train``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pncd.commands._options import option, options, stack
from pncd.commands.config import resolved_params
from pncd.commands.training import check_resume, common_training_options, data_options, train_options
from pncd.distill.options import (DEFAULT_WEIGHTS, MODULES, DistillOptions, DistillRun, parse_modules, parse_taps,
                                  parse_weights, weight_flag)
from pncd.errors import PncdError
from pncd.options import CONFIG, DataOptions
from pncd.optspec import values_from

__all__ = ["DEFAULT_WEIGHTS", "distill_command", "distill_run"]

# Data options a distillation takes from its teacher run when they are not given
TEACHER_DATA = frozenset(DataOptions.__dataclass_fields__)


@click.command("distill")
@common_training_options(clip_grad_norm=DistillRun.default_clip_grad_norm)
@options(DistillRun, only=("teacher", "teacher_weights", "student"))
@options(DistillOptions, only=("weights", "modules"))
@stack(*(option(f"w_{m}", weight_flag(m), DEFAULT_WEIGHTS[m], float) for m in MODULES))
@options(DistillOptions, skip=("weights", "modules"))
@options(DistillRun, only=("student_reference", "strict", "check_teacher"))
@click.pass_context
def distill_command(ctx: click.Context, **params_in: Any) -> None:
    """Distil a frozen teacher into a student with PNCD (PMD, RMD, RD, PNSCD).

    Data options not given on the command line (data, size, channels, classes,
    normalisation) are taken from the teacher run, so the student sees the same data.
    The teacher is evaluated on the val split first (its Dice is printed and saved in
    config.json); --student-reference RUN warns, and with --strict refuses, when a run of the
    student alone scores better. Gradient norms are clipped to 5 unless --clip-grad-norm says
    otherwise, and the distillation weights warm up over the first --kd-warmup of the steps.

    \b
    Examples:
      pncd distill --teacher runs/dcsaunet --student enet --out runs/enet-pncd --epochs 20
      pncd distill --teacher runs/dcsaunet --student enet --modules pnscd --out runs/enet-pnscd
      pncd distill --teacher runs/dcsaunet --student enet --weight pmd=0.1 --weight rmd=0.9 \\
          --weight rd=0.9 --weight pnscd=0.9 --out runs/enet-paper   # the paper's weights (eq. 10)
      pncd distill --teacher runs/dcsaunet --student enet --student-reference runs/enet --strict --out runs/enet-kd
      pncd distill --teacher runs/dcsaunet --student enet --teacher-runtime openvino-int8 --out runs/enet-kd8
      pncd distill --teacher runs/dcsaunet --student enet --pnscd-form crd --rmd-variant paper \\
          --kd-warmup 0 --clip-grad-norm 0 --out runs/enet-crd          # CRD's form, no warm-up or clipping
      pncd distill --teacher mypkg.nets:build --teacher-weights t.safetensors \\
          --taps encoder1=stem --taps encoder3=layer3 --student resnet18 --data DIR --out runs/r18
    """
    from pncd.distill.run import distill

    params = resolved_params(ctx)
    if params["resume"]:
        check_resume(params["out"])
    if Path(params["teacher"]).exists():  # recorded absolute, so that --resume works from any directory
        params["teacher"] = str(Path(params["teacher"]).resolve())
    run = distill_run(ctx, params_in)
    params["clip_grad_norm"] = run.train.clip_grad_norm  # 0 for a run recorded without --pnscd-form (distill_run)
    result = distill(run, record=params)
    click.echo(f"student written to {result.out}")


def _given(ctx: click.Context, key: str) -> bool:
    return ctx.get_parameter_source(key) not in (click.core.ParameterSource.DEFAULT, None)


def distill_weights(ctx: click.Context, p: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, float]]:
    """The switched-on losses and the weights of --modules, --w-NAME and --weight NAME=W.

    --weight NAME=W sets a weight and switches the loss on (or off: W = 0); giving one loss a
    weight both ways with two values is refused."""
    weights = {m: float(p[f"w_{m}"]) for m in MODULES}
    given = parse_weights(p["weight"])
    line = click.core.ParameterSource.COMMANDLINE
    for name, w in given.items():
        if name in MODULES and ctx.get_parameter_source(f"w_{name}") == line == ctx.get_parameter_source("weight") \
                and float(p[f"w_{name}"]) != w:
            raise PncdError(f"--w-{name} {p[f'w_{name}']} and --weight {name}={w} disagree; give the weight once")
    weights.update(given)
    modules = parse_modules(p["modules"])
    return (*modules, *(n for n, w in given.items() if w > 0 and n not in modules)), weights


def recorded_without_pnscd_form(out: str | Path) -> bool:
    """Whether ``out`` holds a distillation run recorded before --pnscd-form existed (its PNSCD
    was the crd form, with no warm-up and no clipping)."""
    from pncd.io import read_json

    cfg_path = Path(out) / CONFIG
    if not cfg_path.is_file():
        return False
    cfg = read_json(cfg_path)
    return cfg.get("kind") == "distill" and "pnscd_form" not in (cfg.get("distill") or {})


def distill_run(ctx: click.Context, p: dict[str, Any]) -> DistillRun:
    """The :class:`DistillRun` of ``pncd distill``'s parsed flags. Data options not given are
    left to the teacher run; a run recorded without --pnscd-form continues as it began (crd PNSCD,
    no warm-up, no clipping) unless flags say otherwise."""
    p = dict(p)
    if p["resume"] and recorded_without_pnscd_form(p["out"]):
        for key, old in (("pnscd_form", "crd"), ("kd_warmup", 0.0), ("clip_grad_norm", 0.0)):
            if not _given(ctx, key):
                p[key] = old
    modules, weights = distill_weights(ctx, p)
    dopts = DistillOptions(**{**values_from(DistillOptions, p), "modules": modules, "weights": weights,
                              "taps": parse_taps(p["taps"])})
    inherit = frozenset(k for k in TEACHER_DATA if not _given(ctx, k))
    return DistillRun(**values_from(DistillRun, p), distill=dopts, data=data_options(p, inherit), train=train_options(p))
