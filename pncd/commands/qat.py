"""``pncd qat``'s click layer (torch-free at import, so that ``--help`` answers at once)."""

from __future__ import annotations

from typing import Any

import click

from pncd.commands.config import config_option, threads_option


def _weights(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected NAME=WEIGHT, e.g. pmd=1") from None
        if not sep or not name.strip() or out[name.strip()] < 0:
            raise click.BadParameter(f"{item!r}: expected NAME=WEIGHT with WEIGHT >= 0, e.g. pmd=1")
    return out or {"pmd": 1.0}


@click.command("qat")
@config_option
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="The QAT run directory to write (locked while qat runs: a second pncd process on it is refused).")
@click.option("--teacher", default="self", show_default=True,
              help="Distillation teacher: 'self' (the float student) or a run directory (e.g. the PNCD teacher).")
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Data set root (default: the one in RUN's config.json).")
@click.option("--steps", type=click.IntRange(1), default=300, show_default=True, help="Fine-tuning steps.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-5, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True)
@click.option("--weight", "weights", multiple=True, callback=_weights, metavar="NAME=W",
              help="A logit distillation loss and its weight (repeatable; default pmd=1).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="PMD temperature.")
@click.option("--lesion-fraction", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of sampled slices that hold a lesion (0: uniform).")
@click.option("--calib-images", type=click.IntRange(1), default=128, show_default=True,
              help="Training images NNCF sets the starting ranges from.")
@click.option("--eval-every", type=click.IntRange(1), default=100, show_default=True,
              help="Score the validation split every N steps; the best step is kept.")
@click.option("--keep-float", type=click.Choice(["first", "none"]), default="first", show_default=True,
              help="first: the layers reading the image stay in float (as pncd export's INT8 default); none: "
                   "quantize every layer.")
@click.option("--int8-cpu", type=click.Choice(["any", "vnni"]), default="any", show_default=True,
              help="any: 7-bit weights (NNCF's overflow fix), so the INT8 ONNX computes the same on every x86 CPU; "
                   "vnni: 8-bit weights, for CPUs with VNNI or AMX only (pncd bench refuses it elsewhere).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace pncd's files in an existing --out (others stay; a folder pncd "
              "did not write is refused).")
@threads_option
def qat_command(run: str, out: str, data: str | None, force: bool, config: str | None, **params: Any) -> None:
    """Quantization-aware distillation: INT8 fine-tuning of a trained student.

    The student is quantized with NNCF, fine-tuned with fake quantization in the graph and
    distilled from its float self (or --teacher); the QDQ ONNX it writes is what
    'pncd export --precision int8' ships to ONNX Runtime, OpenVINO and TensorRT.

    \b
    Example:
      pncd qat runs/enet-pncd --out runs/enet-qat --steps 300
      pncd export runs/enet-qat --target openvino --precision int8 --out exports/enet-ov-qat
      pncd qat runs/enet-pncd --out runs/enet-qat-t --teacher runs/teacher --weight pmd=0.5
    """
    from pncd.qat import QatOptions, run_qat

    opts = QatOptions(**params)
    res = run_qat(run, out, opts, data=data, force=force, echo=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {res.out}: validation Dice float {res.float_val_dice:.4f}, post-training INT8 "
               f"{res.ptq_val_dice:.4f}, after QAT {res.qat_val_dice:.4f} (step {res.best_step})")
