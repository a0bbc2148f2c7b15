"""``pncd export``: the click layer over :func:`pncd.export.pipeline.export_run`."""

from __future__ import annotations

import sys
from typing import Any

import click

from pncd.commands._options import options
from pncd.commands.config import config_option, resolved_params
from pncd.export.options import ExportOptions
from pncd.optspec import values_from
from pncd.targets.registry import TARGETS


class TargetChoice(click.Choice):
    """``click.Choice(list(TARGETS))``, read when used: a target registered at run time (a plug-in)
    is offered too. An unknown name is refused with the valid target/precision pairs."""

    def __init__(self) -> None:
        super().__init__(list(TARGETS))

    @property
    def choices(self):  # noqa: D102 - click reads it for help, completion and checking
        return list(TARGETS)

    @choices.setter
    def choices(self, _value) -> None:
        pass

    def convert(self, value, param, ctx):
        if value in TARGETS:
            return value
        from pncd.targets.registry import valid_pairs

        pairs = ", ".join(f"{t}/{p}" for t, p in valid_pairs())
        self.fail(f"unknown target {value!r}; valid target/precision pairs: {pairs}", param, ctx)


@click.command("export", context_settings={"max_content_width": 100})
@config_option
@click.argument("run", type=click.Path(file_okay=True, dir_okay=True))
@options(ExportOptions, click_kw={"target": {"type": TargetChoice()}})
@click.pass_context
def export_command(ctx: click.Context, config: str | None, run: str, **params: Any) -> None:
    """Export a trained run to ONNX Runtime, OpenVINO or TensorRT, check it against torch, and
    write the artifact with its manifest.json.

    RUN is a run directory of pncd train / distill (config.json + best.safetensors). The export
    is compared with the torch model on held-out images; FP32 must agree on >= 99.99% of
    pixels, FP16 on >= 99.9%, or nothing is written. INT8 is calibrated on training images and
    must keep >= 99% of the FP32 Dice (else nothing is written; --no-strict: a warning). INT8
    for the CPU runtimes keeps 7-bit weights, so it computes the same on CPUs with and without
    VNNI (--int8-cpu). A run that stopped before its last epoch is exported with a warning, and the manifest says so
    (source.complete, source.epochs_done, source.epochs).

    \b
    Examples:
      pncd export runs/enet-pncd --target onnxruntime --precision fp32 --out exports/enet-ort-fp32
      pncd export runs/enet-pncd --target openvino --precision int8 --calib-size 256 \\
          --accuracy-control --max-dice-drop 0.005 --out exports/enet-ov-int8
      pncd export runs/enet-pncd --target onnxruntime --precision int8 --keep-float auto \\
          --max-dice-drop 0.005 --out exports/enet-ort-int8-auto
      pncd export runs/enet-pncd --target tensorrt --precision int8 --dynamic-batch --out exports/enet-trt-int8
      pncd export runs/enet-pncd --target jetson --precision fp16 --input-size 256x256 --out exports/enet-jetson
    """
    from pncd.export.calibration import parse_size
    from pncd.export.pipeline import export_run

    opts = ExportOptions(**{**values_from(ExportOptions, params), "input_size": parse_size(params["input_size"])})
    command = " ".join(["pncd", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("pncd") else None
    export_run(run, opts, options=resolved_params(ctx), command=command)
