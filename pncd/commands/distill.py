"""``pncd distill``'s click layer (torch-free at import, so that ``--help`` answers at once;
the engine, :mod:`pncd.distill.engine`, is imported when the command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pncd.commands.training import CONFIG, check_resume, common_training_options, data_options, ranged, train_options
from pncd.commands.config import resolved_params
from pncd.distill.options import (DEFAULT_WEIGHTS, DISTILL_RANGES, MODULES, TEACHER_RUNTIMES, DistillOptions, DistillRun,
                                  parse_modules, parse_taps, parse_weights)
from pncd.errors import PncdError

_O = DistillOptions()  # the defaults (one definition: pncd.distill.options)


def _ranged(kind: type, name: str) -> click.ParamType:
    return ranged(kind, name, DISTILL_RANGES)


# Data options a distillation takes from its teacher run when they are not given
TEACHER_DATA = frozenset({"data", "size", "channels", "num_classes", "normalization", "split_seed", "fold", "folds_file"})


@click.command("distill")
@common_training_options(clip_grad_norm=DistillRun.default_clip_grad_norm)
@click.option("--teacher", required=True, help="Teacher run directory, or package.module:function for your own network.")
@click.option("--teacher-weights", type=click.Path(dir_okay=False, exists=True), default=None, help="Weights (.safetensors or .pt) for a factory teacher.")
@click.option("--student", required=True, help="Student network: enet, mobilenetv2, resnet18 (any registered model).")
@click.option("--weight", "weight", multiple=True, metavar="NAME=W",
              help="Weight of a distillation loss (repeat), e.g. --weight pmd=0.1 --weight pnscd=0.9; a loss given a weight "
                   f"is switched on, 0 switches it off. Built in: {', '.join(MODULES)} (defaults "
                   f"{', '.join(f'{k}={v}' for k, v in DEFAULT_WEIGHTS.items())}; the paper's: pmd=0.1, others 0.9).")
@click.option("--modules", default=",".join(MODULES), show_default=True,
              help="Comma-separated built-in losses to switch on (or 'none'); --weight adds to them.")
@click.option("--w-pmd", type=_ranged(float, "weight"), default=DEFAULT_WEIGHTS["pmd"], show_default=True, help="Same as --weight pmd=W.")
@click.option("--w-rmd", type=_ranged(float, "weight"), default=DEFAULT_WEIGHTS["rmd"], show_default=True, help="Same as --weight rmd=W.")
@click.option("--w-rd", type=_ranged(float, "weight"), default=DEFAULT_WEIGHTS["rd"], show_default=True, help="Same as --weight rd=W.")
@click.option("--w-pnscd", type=_ranged(float, "weight"), default=DEFAULT_WEIGHTS["pnscd"], show_default=True, help="Same as --weight pnscd=W.")
@click.option("--temperature", type=_ranged(float, "temperature"), default=_O.temperature, show_default=True, help="PMD softmax temperature T.")
@click.option("--rmd-variant", type=click.Choice(["paper", "emkd"]), default=_O.rmd_variant, show_default=True,
              help="emkd: |e|^4 maps, squared L2 (EMKD's); paper: |e|^2 maps, L1 (eqs. 2-4).")
@click.option("--tau", type=_ranged(float, "tau"), default=_O.tau, show_default=True, help="PNSCD temperature.")
@click.option("--n-negatives", type=_ranged(int, "n_negatives"), default=_O.n_negatives, show_default=True, help="PNSCD negatives N (batch + memory).")
@click.option("--pnscd-form", type=click.Choice(["infonce", "crd", "instance"]), default=_O.pnscd_form, show_default=True,
              help="infonce: each positive against the log-sum-exp of the negatives (bounded in N); "
                   "instance: each image's class region against the other images' regions (instance discrimination); "
                   "crd: eq. 8's noise-contrastive sum over negatives (CRD's form).")
@click.option("--pnscd-memory", type=_ranged(int, "pnscd_memory"), default=_O.pnscd_memory,
              help="PNSCD memory per class. Default: 256 teacher region vectors (infonce), ceil(N/(K-1)) embeddings (crd).")
@click.option("--pnscd-norm", type=click.Choice(["crd", "none"]), default=_O.pnscd_norm, show_default=True,
              help="crd form only. crd: divide e^s by CRD's constant Z (loss of order 1); none: h = e^s/(e^s + N/M) "
                   "literally, whose negative sum is of order N and swamps Loss_seg.")
@click.option("--kd-warmup", type=_ranged(float, "kd_warmup"), default=_O.kd_warmup, show_default=True,
              help="Ramp the distillation weights linearly 0 -> 1 over this fraction of all steps (0: off).")
@click.option("--student-reference", type=click.Path(file_okay=False, exists=True), default=None,
              help="A run of the student trained alone: warn when the teacher's val Dice is not above its best.")
@click.option("--strict", is_flag=True, help="With --student-reference: refuse a teacher whose val Dice is below the student run's best.")
@click.option("--check-teacher/--no-check-teacher", default=DistillRun.__dataclass_fields__["check_teacher"].default, show_default=True,
              help="Evaluate the teacher on the val split once before training (skipped on --resume).")
@click.option("--taps", multiple=True, help="A feature pair STUDENT_MODULE=TEACHER_MODULE (repeat; last pair feeds PNSCD).")
@click.option("--teacher-runtime", type=click.Choice(TEACHER_RUNTIMES), default=_O.teacher_runtime, show_default=True,
              help="How the frozen teacher's forward runs. openvino: converted to OpenVINO, float32, on the CPU (2-4x faster "
                   "than torch for DCSAU-Net); auto: openvino on a CPU where it is installed and agrees with torch, else torch; "
                   "openvino-int8: quantized by NNCF on 64 training slices, about 2x faster again, refused when its argmax "
                   "keeps under --int8-agreement of the float teacher's pixels.")
@click.option("--int8-agreement", type=_ranged(float, "int8_agreement"), default=_O.int8_agreement, show_default=True,
              help="openvino-int8: the least fraction of pixels (on 64 training slices it was not calibrated on) "
                   "whose argmax must agree with the float teacher's.")
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
    dopts = DistillOptions(modules=modules, weights=weights, temperature=p["temperature"], rmd_variant=p["rmd_variant"],
                           tau=p["tau"], n_negatives=p["n_negatives"], pnscd_norm=p["pnscd_norm"], pnscd_form=p["pnscd_form"],
                           pnscd_memory=p["pnscd_memory"], kd_warmup=p["kd_warmup"], taps=parse_taps(p["taps"]),
                           teacher_runtime=p["teacher_runtime"], int8_agreement=p["int8_agreement"])
    inherit = frozenset(k for k in TEACHER_DATA if not _given(ctx, k))
    return DistillRun(teacher=p["teacher"], teacher_weights=p["teacher_weights"], student=p["student"], out=p["out"],
                      resume=p["resume"], force=p["force"], distill=dopts, data=data_options(p, inherit), train=train_options(p),
                      student_reference=p["student_reference"], strict=p["strict"], check_teacher=p["check_teacher"])
