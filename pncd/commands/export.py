"""``pncd export``: the click layer over :func:`pncd.export.pipeline.export_run`."""

from __future__ import annotations

import sys

import click

from pncd.commands.config import config_option, resolved_params
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
@click.option("--target", required=True, type=TargetChoice(), help="The export target (pncd.targets.TARGETS).")
@click.option("--precision", default="fp32", show_default=True, help="fp32, fp16 or int8.")
@click.option("--out", required=True, type=click.Path(), help="Directory to write (must not exist, see --force).")
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Data set root for the parity check (and calibration), replacing the root recorded in the "
                   "run's config.json (a run trained on another machine).")
@click.option("--calib-data", type=click.Path(), default=None,
              help="Data set root for INT8 calibration (its train split); default: the run's data set.")
@click.option("--calib-size", type=click.IntRange(1), default=128, show_default=True, help="Training images used to calibrate INT8.")
@click.option("--calib-method", default="minmax", show_default=True, help="minmax, entropy or percentile.")
@click.option("--input-size", default=None, help="HxW of the exported input (default: the run's data size).")
@click.option("--dynamic-batch", is_flag=True, help="Export a dynamic batch dimension (default: batch 1).")
@click.option("--accuracy-control", is_flag=True,
              help="OpenVINO INT8: NNCF accuracy-aware quantization (Dice on held-out images).")
@click.option("--max-dice-drop", type=float, default=0.01, show_default=True,
              help="Largest absolute Dice drop --accuracy-control or --keep-float auto may accept.")
@click.option("--ac-images", type=int, default=0, show_default=True,
              help="Held-out images --accuracy-control computes Dice on (0: the whole val split).")
@click.option("--parity-images", type=int, default=0, show_default=True,
              help="Held-out (val, else test) images for the parity check against torch; 0: for INT8 the "
                   "whole split up to 512 images (its Dice check is per case), 32 for FP32/FP16.")
@click.option("--keep-float", default="first", show_default=True,
              help="INT8: network ends left in floating point: first (layers reading the image), last "
                   "(the classifier), first,last or none; add auto (auto = first,auto) to also keep the fewest blocks, "
                   "most sensitive first (see --sensitivity), that bring the validation Dice within --max-dice-drop.")
@click.option("--sensitivity", is_flag=True,
              help="INT8: quantize each block (first-level torch module) alone on the target's runtime and record "
                   "its validation Dice drop (manifest build.sensitivity; a table on stderr). Costs one "
                   "calibration and one validation pass per block.")
@click.option("--ov-preset", type=click.Choice(["performance", "mixed"]), default=None,
              help="OpenVINO INT8: NNCF preset; mixed (default) = asymmetric activations, performance = symmetric "
                   "(on LGG, ENet kept 98% of its Dice with mixed, 90% with performance, at a similar speed).")
@click.option("--ov-rounding", type=click.Choice(["nearest", "gptq"]), default=None,
              help="OpenVINO INT8: how the 1x1 convolutions' weights are rounded. gptq (default with 7-bit weights) "
                   "chooses each layer's levels so its output on the calibration images stays closest to the float "
                   "model's (LGG MobileNetV2: 100.2% of the test Dice kept, nearest 98.9%); nearest = NNCF's own "
                   "(the default with --int8-cpu vnni or --accuracy-control).")
@click.option("--inference-precision", type=click.Choice(["auto", "f32", "f16", "bf16"]), default="auto",
              show_default=True,
              help="OpenVINO: the precision its CPU plugin computes in. auto = what the artifact promises (f32 for "
                   "fp32 and int8; f16 for fp16 where the CPU has FP16 arithmetic, else f32). OpenVINO's own default "
                   "is bf16 on CPUs with BF16; ask for it here explicitly. The parity check and pncd bench use it.")
@click.option("--strict/--no-strict", default=True, show_default=True,
              help="INT8: fail (exit 1, write nothing) when it keeps < 99% of the FP32 Dice on the held-out images; "
                   "--no-strict writes it anyway, with the warning in its manifest.")
@click.option("--int8-cpu", type=click.Choice(["any", "vnni"]), default=None,
              help="INT8 for onnxruntime / openvino: any (default) = 7-bit weights, correct on every x86 CPU; vnni = "
                   "8-bit weights, for CPUs with VNNI or AMX only (without VNNI the int16 sums saturate: pncd bench "
                   "refuses such an artifact there).")
@click.option("--force", is_flag=True, help="Replace pncd's files in an existing --out (others stay; a folder pncd "
              "did not write is refused).")
@click.pass_context
def export_command(ctx: click.Context, config, run, target, precision, out, data, calib_data, calib_size, calib_method,
                   input_size, dynamic_batch, accuracy_control, max_dice_drop, ac_images, parity_images, keep_float, sensitivity,
                   ov_preset, ov_rounding, inference_precision, strict, int8_cpu, force) -> None:
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
    from pncd.export.pipeline import ExportOptions, export_run

    opts = ExportOptions(
        target=target, precision=precision, out=out, data=data, calib_data=calib_data, calib_size=calib_size,
        calib_method=calib_method, input_size=parse_size(input_size), dynamic_batch=dynamic_batch,
        accuracy_control=accuracy_control, max_dice_drop=max_dice_drop, strict=strict, force=force,
        parity_images=parity_images,
        keep_float=tuple(k.strip() for k in keep_float.split(",") if k.strip() and k.strip() != "none"),
        ov_preset=ov_preset, ov_rounding=ov_rounding, ac_images=ac_images, inference_precision=inference_precision, sensitivity=sensitivity,
        int8_cpu=int8_cpu,
    )
    command = " ".join(["pncd", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("pncd") else None
    export_run(run, opts, options=resolved_params(ctx), command=command)
