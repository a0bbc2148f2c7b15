"""What ``pncd bench`` can be asked: :class:`BenchOptions`, each option defined once.

A field's ``metadata["cli"]`` (:func:`pncd.optspec.cli`) says how it appears on the command line;
the click options of ``pncd bench`` are generated from it (:mod:`pncd.commands._options`), so a
default or a help text is written here and nowhere else. Fields without it are for Python
callers only (``progress``). The Jetson side (:class:`pncd.targets.jetson.JetsonOptions`)
takes its shared fields from here (:func:`pncd.bench.sites.jetson_options`;
``tests/bench/test_bench_options.py`` checks that their defaults agree), and the host passes
every one of them to the device runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pncd.data.spec import SPLITS
from pncd.errors import PncdError
from pncd.optspec import Cli, cli, values_from
from pncd.targets.cpu import INFERENCE_PRECISIONS

__all__ = ["DEVICES", "SPLITS", "BenchOptions", "Cli", "cli", "validate"]

DEVICES = ("cpu", "cuda", "jetson")


@dataclass(kw_only=True)
class BenchOptions:
    """Options of one bench run (the flags of ``pncd bench``, plus ``progress``)."""

    data: Path | str | None = field(default=None, metadata=cli(
        "Data set root; overrides the root in each artifact's data spec (default: the run's).", path="dir"))
    split: str = field(default="test", metadata=cli(choices=SPLITS))
    device: str = field(default="cpu", metadata=cli(
        "Where artifacts run. jetson: on a Jetson (with --host over SSH, else locally).", choices=DEVICES))
    host: str | None = field(default=None, metadata=cli("user@address (or ~/.ssh/config alias) of the Jetson."))
    out: Path | str = field(default="bench-report", metadata=cli("Report directory (new).", path="any",
                                                                 required=True))
    force: bool = field(default=False, metadata=cli(
        "Replace pncd's files in an existing report directory (others stay; a folder pncd did not write is refused)."))
    warmup: int = field(default=10, metadata=cli(low=0))
    iters: int = field(default=100, metadata=cli("Timed iterations at batch 1.", low=1))
    duration: float = field(default=0.0, metadata=cli("Seconds to time instead of --iters (0: use --iters).", low=0))
    interleave_rounds: int = field(default=10, metadata=cli(
        "Time the reference and every artifact again in this many interleaved rounds, so all see the same machine "
        "load; report each row's CV and flag unstable rows (0: off).", low=0))
    batch: int = field(default=8, metadata=cli("Batch size for the throughput measurement (1: skip).", low=1))
    accuracy_batch: int = field(default=8, metadata=cli(low=1))
    n_boot: int = field(default=2000, metadata=cli("Bootstrap resamples for the Dice difference interval.", low=100))
    seed: int = field(default=0, metadata=cli("Bootstrap seed.", low=0))
    overlays: int = field(default=4, metadata=cli(
        "Overlay PNGs per artifact: the slices where it disagrees most with its reference.", low=0))
    anonymize: bool = field(default=False, metadata=cli(
        "Replace case ids (patient ids on real data) by stable aliases (case- and 10 hex digits of their SHA-256) "
        "in report.json, report.md and the overlays. Reports never hold the host name or an absolute path."))
    reference: bool = field(default=True, metadata=cli("Skip the torch reference (no comparison).",
                                                       flag="--no-reference", param="no_reference", invert=True))
    verify: bool = field(default=True, metadata=cli(
        "Do not check each artifact's files against the SHA-256 in its manifest (recorded in the report).",
        flag="--no-verify", param="no_verify", invert=True))
    allow_int8_saturation: bool = field(default=False, metadata=cli(
        "Bench an INT8 artifact with 8-bit weights (pncd export --int8-cpu vnni) on a CPU without VNNI, where its "
        "int16 sums may saturate (refused by default; the report records the CPU)."))
    allow_stale_source: bool = field(default=False, metadata=cli(
        "Bench an artifact whose source checkpoint changed since the export (SHA-256 differs from its manifest, "
        "e.g. the run was retrained): its torch reference is then the checkpoint as it is now (the report says so)."))
    threads: int | None = field(default=None, metadata=cli(
        "Intra-op threads for local runtimes and torch (default: the usable physical cores, divided among the "
        "processes of a torchrun; printed).", low=1))
    inference_precision: str | None = field(default=None, metadata=cli(
        "OpenVINO compute precision (default: the one the artifact was exported and checked with; auto = f32 for "
        "fp32/int8, f16 for fp16 where the CPU computes in FP16).", choices=INFERENCE_PRECISIONS))
    profile: bool = field(default=False, metadata=cli(
        "After timing each artifact, profile it per node with its runtime's own profiler in a separate session "
        "(OpenVINO PERF_COUNT, ONNX Runtime's trace, TensorRT's layer times): time per op type, the precision "
        "each layer ran in, the reorder/cast/(de)quantize share; written to profile.json and report.md. "
        "E.g. pncd bench exports/enet-ov-int8 exports/enet-ov-fp32 --profile --out reports/why"))
    ssh_options: tuple[str, ...] = field(default=(), metadata=cli(
        "Extra ssh/scp option, repeatable: '-i KEY', '-p PORT', '-o UserKnownHostsFile=F', '-J JUMP'.",
        flag="--ssh-option", multiple=True))
    remote_python: str | None = field(default=None, metadata=cli(
        "Python on the Jetson (default python3; locally: this interpreter)."))
    remote_backend: str = field(default="auto", metadata=cli(
        "auto: TensorRT when importable on the device, else ONNX Runtime.", choices=("auto", "tensorrt", "onnxruntime")))
    engine_cache: str = field(default="~/.cache/pncd-engines", metadata=cli(
        "TensorRT engine cache directory on the device."))
    tegrastats: str = field(default="auto", metadata=cli(
        "Power sampling on the Jetson: auto (if on PATH), off, or a path."))
    progress: bool = True  # progress bars on stderr (Python callers only)

    def __post_init__(self) -> None:
        self.ssh_options = tuple(self.ssh_options)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> BenchOptions:
        """Options from click's parameters (names as :attr:`pncd.optspec.Cli.param` says; others ignored)."""
        return cls(**values_from(cls, params))


def validate(opts: BenchOptions, artifacts: list[Any]) -> None:
    """Option errors that need no files: one PncdError line each."""
    if opts.device not in DEVICES:
        raise PncdError(f"unknown --device {opts.device!r}; use one of {', '.join(DEVICES)}")
    if opts.host and opts.device != "jetson":
        raise PncdError("--host only applies to --device jetson")
    if not artifacts:
        raise PncdError("no artifact given; pass one or more directories written by pncd export")
    if opts.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PncdError("--device cuda was asked for but no CUDA device is visible; use --device cpu")
