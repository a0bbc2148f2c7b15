"""``pncd qat``'s click layer (torch-free at import, so that ``--help`` answers at once). Its
options are the fields of :class:`pncd.qat_options.QatOptions` and :class:`QatPlaces`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import click

from pncd.commands._options import options
from pncd.commands.config import config_option, threads_option
from pncd.optspec import cli, values_from
from pncd.qat_options import QatOptions


@dataclass(kw_only=True)
class QatPlaces:
    """Where ``pncd qat RUN`` writes and reads (the other arguments of :func:`pncd.qat.run_qat`)."""

    out: str = field(metadata=cli(
        "The QAT run directory to write (locked while qat runs: a second pncd process on it is refused).", path="dir"))
    data: str | None = field(default=None, metadata=cli("Data set root (default: the one in RUN's config.json).",
                                                        path="dir"))
    force: bool = field(default=False, metadata=cli(
        "Replace pncd's files in an existing --out (others stay; a folder pncd did not write is refused)."))


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
    return out or QatOptions().weights


@click.command("qat")
@config_option
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@options(QatPlaces, only=("out",))
@options(QatOptions, click_kw={"weights": {"callback": _weights}})
@options(QatPlaces, skip=("out",))
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

    opts = QatOptions(**values_from(QatOptions, params))
    res = run_qat(run, out, opts, data=data, force=force, echo=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {res.out}: validation Dice float {res.float_val_dice:.4f}, post-training INT8 "
               f"{res.ptq_val_dice:.4f}, after QAT {res.qat_val_dice:.4f} (step {res.best_step})")
