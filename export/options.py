"""What ``pncd export`` can be asked: :class:`ExportOptions`, each option defined once.

Torch-free, so that ``pncd export --help`` answers at once: the click options of
:mod:`pncd.commands.export` are generated from these fields (``metadata=cli(...)``,
:mod:`pncd.optspec`). The checks that need no files are :func:`pncd.export.pipeline.validate`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pncd.optspec import cli
from pncd.targets.cpu import INFERENCE_PRECISIONS

INT8_CPUS = ("any", "vnni")


@dataclass
class ExportOptions:
    """Options of one export (the CLI flags of ``pncd export``)."""

    target: str = field(metadata=cli("The export target (pncd.targets.TARGETS)."))
    precision: str = field(metadata=cli("fp32, fp16 or int8.", default="fp32"))
    out: str = field(metadata=cli("Directory to write (must not exist, see --force).", path="any"))
    data: str | None = field(default=None, metadata=cli(  # replaces the data root recorded in the run
        "Data set root for the parity check (and calibration), replacing the root recorded in the run's config.json "
        "(a run trained on another machine).", path="dir"))
    calib_data: str | None = field(default=None, metadata=cli(
        "Data set root for INT8 calibration (its train split); default: the run's data set.", path="any"))
    calib_size: int = field(default=128, metadata=cli("Training images used to calibrate INT8.", low=1))
    calib_method: str = field(default="minmax", metadata=cli("minmax, entropy or percentile."))
    input_size: tuple[int, int] | None = field(default=None, metadata=cli(
        "HxW of the exported input (default: the run's data size).", text=True))
    dynamic_batch: bool = field(default=False, metadata=cli("Export a dynamic batch dimension (default: batch 1)."))
    accuracy_control: bool = field(default=False, metadata=cli(
        "OpenVINO INT8: NNCF accuracy-aware quantization (Dice on held-out images)."))
    max_dice_drop: float = field(default=0.01, metadata=cli(
        "Largest absolute Dice drop --accuracy-control or --keep-float auto may accept."))
    ac_images: int = field(default=0, metadata=cli(  # 0 = the whole val split
        "Held-out images --accuracy-control computes Dice on (0: the whole val split)."))
    # 0: automatic: for INT8 the held-out split up to pipeline.INT8_PARITY_MAX images, else 32
    parity_images: int = field(default=0, metadata=cli(
        "Held-out (val, else test) images for the parity check against torch; 0: for INT8 the whole split up to 512 "
        "images (its Dice check is per case), 32 for FP32/FP16."))
    parity_batch: int = 8
    keep_float: tuple[str, ...] = field(default=("first",), metadata=cli(  # + "auto": pncd.export.sensitivity's blocks
        "INT8: network ends left in floating point: first (layers reading the image), last (the classifier), "
        "first,last or none; add auto (auto = first,auto) to also keep the fewest blocks, most sensitive first (see "
        "--sensitivity), that bring the validation Dice within --max-dice-drop.", sep=","))
    sensitivity: bool = field(default=False, metadata=cli(  # INT8: manifest build.sensitivity
        "INT8: quantize each block (first-level torch module) alone on the target's runtime and record its validation "
        "Dice drop (manifest build.sensitivity; a table on stderr). Costs one calibration and one validation pass "
        "per block."))
    ov_preset: str | None = field(default=None, metadata=cli(  # OpenVINO INT8 only; None = "mixed"
        "OpenVINO INT8: NNCF preset; mixed (default) = asymmetric activations, performance = symmetric (on LGG, ENet "
        "kept 98% of its Dice with mixed, 90% with performance, at a similar speed).",
        choices=("performance", "mixed")))
    ov_rounding: str | None = field(default=None, metadata=cli(  # None = gptq for 7-bit weights
        "OpenVINO INT8: how the 1x1 convolutions' weights are rounded. gptq (default with 7-bit weights) chooses each "
        "layer's levels so its output on the calibration images stays closest to the float model's (LGG "
        "MobileNetV2: 100.2% of the test Dice kept, nearest 98.9%); nearest = NNCF's own (the default with "
        "--int8-cpu vnni or --accuracy-control).", choices=("nearest", "gptq")))
    inference_precision: str = field(default="auto", metadata=cli(  # pncd.targets.cpu.resolve_inference_precision
        "OpenVINO: the precision its CPU plugin computes in. auto = what the artifact promises (f32 for fp32 and "
        "int8; f16 for fp16 where the CPU has FP16 arithmetic, else f32). OpenVINO's own default is bf16 on CPUs "
        "with BF16; ask for it here explicitly. The parity check and pncd bench use it.",
        choices=INFERENCE_PRECISIONS))
    strict: bool = field(default=True, metadata=cli(  # INT8 below MIN_INT8_DICE_RATIO fails (--no-strict: a warning)
        "INT8: fail (exit 1, write nothing) when it keeps < 99% of the FP32 Dice on the held-out images; --no-strict "
        "writes it anyway, with the warning in its manifest.", pair=True))
    int8_cpu: str | None = field(default=None, metadata=cli(  # "any" (7-bit weights, the default) or "vnni"
        "INT8 for onnxruntime / openvino: any (default) = 7-bit weights, correct on every x86 CPU; vnni = 8-bit "
        "weights, for CPUs with VNNI or AMX only (without VNNI the int16 sums saturate: pncd bench refuses such an "
        "artifact there).", choices=INT8_CPUS))
    onnx: str | None = field(default=None, metadata=cli(  # pncd.export.shared_onnx
        "Build from this FP32 ONNX of the run instead of exporting it again: one written by pncd benchmark (its "
        "onnx.json beside it, checked: same checkpoint SHA-256, input size and batch), e.g. "
        "--onnx bench-enet/onnx/model.onnx.", path="file"))
    force: bool = field(default=False, metadata=cli(
        "Replace pncd's files in an existing --out (others stay; a folder pncd did not write is refused)."))
