"""``pncd distill``'s click layer (torch-free at import, so that ``--help`` answers at once;
the engine, :mod:`pncd.distill.engine`, is imported when the command runs)."""

from __future__ import annotations

from typing import Any

import click

from pncd.commands.training import common_training_options

MODULES = ("pmd", "rmd", "rd", "pnscd")
DISTILL_CLIP_GRAD_NORM = 5.0  # distill's --clip-grad-norm default (pncd train's is 0, unchanged)
# Default weights at "CPU scale": with the paper's 0.1/0.9/0.9/0.9 (eq. 10), RMD sent 19-21x, PNSCD
# 2.5-6x and RD 0.9-1.6x Loss_seg's gradient norm into ENet, nearly orthogonal to it, and the run
# collapsed (bench/experiments/distill_gradients.py, bench/results/lgg-cpu/); 0.1/0.1/0.3/0.1 brings each
# feature term below Loss_seg. The paper's weights stay reachable with the --w-* flags.
DEFAULT_WEIGHTS = {"pmd": 0.1, "rmd": 0.1, "rd": 0.3, "pnscd": 0.1}


@click.command("distill")
@common_training_options(clip_grad_norm=DISTILL_CLIP_GRAD_NORM)
@click.option("--teacher", required=True, help="Teacher run directory, or package.module:function for your own network.")
@click.option("--teacher-weights", type=click.Path(dir_okay=False, exists=True), default=None, help="Weights (.safetensors or .pt) for a factory teacher.")
@click.option("--student", required=True, help="Student network: enet, mobilenetv2, resnet18 (any registered model).")
@click.option("--modules", default=",".join(MODULES), show_default=True, help="Comma-separated subset of pmd,rmd,rd,pnscd (or 'none').")
@click.option("--w-pmd", type=float, default=DEFAULT_WEIGHTS["pmd"], show_default=True, help="Weight a of PMD (the paper's: 0.1).")
@click.option("--w-rmd", type=float, default=DEFAULT_WEIGHTS["rmd"], show_default=True,
              help="Weight b1 of RMD (the paper's: 0.9; see pncd.commands.distill for why the default is lower).")
@click.option("--w-rd", type=float, default=DEFAULT_WEIGHTS["rd"], show_default=True, help="Weight b2 of RD (the paper's: 0.9).")
@click.option("--w-pnscd", type=float, default=DEFAULT_WEIGHTS["pnscd"], show_default=True,
              help="Weight b3 of PNSCD (the paper's: 0.9).")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="PMD softmax temperature T.")
@click.option("--rmd-variant", type=click.Choice(["paper", "emkd"]), default="emkd", show_default=True,
              help="emkd: |e|^4 maps, squared L2 (EMKD's); paper: |e|^2 maps, L1 (eqs. 2-4).")
@click.option("--tau", type=float, default=0.07, show_default=True, help="PNSCD temperature.")
@click.option("--n-negatives", type=int, default=4096, show_default=True, help="PNSCD negatives N (batch + memory).")
@click.option("--pnscd-form", type=click.Choice(["infonce", "crd"]), default="infonce", show_default=True,
              help="infonce: each positive against the log-sum-exp of the negatives (bounded in N); "
                   "crd: eq. 8's noise-contrastive sum over negatives (the form before issue 16).")
@click.option("--pnscd-memory", type=click.IntRange(min=1), default=None,
              help="PNSCD memory per class. Default: 256 teacher region vectors (infonce), ceil(N/(K-1)) embeddings (crd).")
@click.option("--pnscd-norm", type=click.Choice(["crd", "none"]), default="crd", show_default=True,
              help="crd form only. crd: divide e^s by CRD's constant Z (loss of order 1); none: h = e^s/(e^s + N/M) "
                   "literally, whose negative sum is of order N and swamps Loss_seg.")
@click.option("--kd-warmup", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Ramp the distillation weights linearly 0 -> 1 over this fraction of all steps (0: off).")
@click.option("--student-reference", type=click.Path(file_okay=False, exists=True), default=None,
              help="A run of the student trained alone: warn when the teacher's val Dice is not above its best.")
@click.option("--strict", is_flag=True, help="With --student-reference: refuse a teacher whose val Dice is below the student run's best.")
@click.option("--check-teacher/--no-check-teacher", default=True, show_default=True,
              help="Evaluate the teacher on the val split once before training (skipped on --resume).")
@click.option("--taps", multiple=True, help="A feature pair STUDENT_MODULE=TEACHER_MODULE (repeat; last pair feeds PNSCD).")
@click.pass_context
def distill_command(ctx: click.Context, **params: Any) -> None:
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
      pncd distill --teacher runs/dcsaunet --student enet --student-reference runs/enet --strict --out runs/enet-kd
      pncd distill --teacher runs/dcsaunet --student enet --pnscd-form crd --rmd-variant paper \\
          --kd-warmup 0 --clip-grad-norm 0 --out runs/enet-old          # the behaviour before issue 16
      pncd distill --teacher mypkg.nets:build --teacher-weights t.safetensors \\
          --taps encoder1=stem --taps encoder3=layer3 --student resnet18 --data DIR --out runs/r18
    """
    from pncd.distill.engine import run_distill

    run_distill(ctx, **params)
