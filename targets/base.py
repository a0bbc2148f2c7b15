"""What every backend is made of: a :class:`Target` (build an artifact, make its runner) and a :class:`Runner`.

A backend is one module defining a ``Target`` subclass and its ``Runner``; one line in
:mod:`pncd.targets.registry` (or ``register_target(...)`` at run time) puts it in
``pncd.targets.TARGETS``, which ``pncd export``, :func:`pncd.targets.registry.load_runner` and
the bench iterate over.
"""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from pncd.errors import RunFailed

if TYPE_CHECKING:
    from pncd.data.images import ImageSet

PRECISIONS = ("fp32", "fp16", "int8")


def require(module: str, package: str | None = None, purpose: str = "") -> Any:
    """Import an optional backend, or fail with the exact package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pkg = package or module
        what = f" for {purpose}" if purpose else ""
        raise RunFailed(f"{module} is not installed{what}: pip install '{pkg}' ({e})") from None


class Runner:
    """Base runner: subclasses implement ``_activate``, ``_infer`` and ``_deactivate``."""

    name = "runner"

    def __init__(self) -> None:
        self.is_active = False
        self.last_inference_time: float | None = None

    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"{self.name}: call activate() before infer()")
        t0 = time.perf_counter()
        out = self._infer(feed)
        self.last_inference_time = time.perf_counter() - t0
        return out

    def input_names(self) -> list[str]:
        raise NotImplementedError

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def _activate(self) -> None:
        raise NotImplementedError

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _deactivate(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


@dataclass
class BuildSpec:
    """What a target's build needs besides the FP32 ONNX: the precision, the images, and the INT8
    settings the export resolved (the float-layer plan included). Settings a target does not
    take stay at their defaults (the export refuses them first, from :attr:`Target.flags`)."""

    precision: str
    calib: "ImageSet | None" = None  # INT8 calibration images (None: FP32/FP16, or a QAT run's INT8)
    validation: "ImageSet | None" = None  # held-out images (OpenVINO's accuracy control)
    num_classes: int = 2
    input_chw: tuple[int, int, int] | None = None  # (C, H, W) of the exported input
    input_name: str = "image"
    dynamic_batch: bool = False
    prequantized: bool = False  # INT8 from a QAT run: the ONNX given is already quantized (QDQ)
    calib_method: str = "minmax"
    keep_float: tuple[str, ...] = ("first",)  # network ends INT8 leaves in float: first, last
    float_nodes: list[str] | None = None  # the export's float-layer plan (None: ``keep_float`` alone)
    plan_record: dict[str, Any] = field(default_factory=dict)  # how the plan was found (manifest "build")
    portable: bool = True  # CPU INT8: 7-bit weights (correct on x86 CPUs without VNNI)
    accuracy_control: bool = False  # OpenVINO INT8: NNCF's accuracy control
    max_dice_drop: float = 0.01
    ov_preset: str = "mixed"
    ov_rounding: str = "nearest"  # OpenVINO INT8: how 1x1 convolution weights are rounded (resolved)
    inference_precision: str = "auto"  # OpenVINO: auto|f32|f16|bf16
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))  # progress lines


@dataclass
class BuildResult:
    """What a build wrote into its directory, and what the manifest and the parity check need."""

    artifact: str  # the file the runner loads (manifest "artifact")
    onnx: str | None  # the ONNX file in the directory, if any (manifest "onnx")
    build: dict[str, Any]  # conversion options (manifest "build")
    calibration_method: str = ""  # the backend's name for how INT8 was calibrated
    tensorrt: dict[str, Any] | None = None  # build plans and engine (targets tensorrt / jetson)
    parity_runners: list[tuple[str, Runner]] = field(default_factory=list)  # (label, inactive runner)


@dataclass
class RunnerOptions:
    """How to run an artifact: the artifact's own facts and the caller's settings."""

    threads: int | None = None
    precision: str = "fp32"  # the artifact's precision
    inference_precision: str | None = None  # OpenVINO: auto|f32|f16|bf16 (None: auto)
    manifest: dict[str, Any] | None = None  # the export's manifest, when loaded from its directory
    directory: Path | None = None  # the export directory, when loaded from one


@dataclass(frozen=True)
class Target:
    """One export target. Subclasses implement :meth:`build` and :meth:`runner`."""

    name: str
    runtime: str  # what runs the main artifact (manifest "runtime")
    package: str  # pip package of that runtime
    description: str
    precisions: tuple[str, ...] = PRECISIONS
    suffixes: tuple[str, ...] = ()  # bare files (no manifest) this target's runner loads, by suffix
    # the pncd export options this target takes beyond the common ones, each with the precisions
    # it applies to (pncd export refuses the others)
    flags: tuple[tuple[str, tuple[str, ...]], ...] = ()
    plan_backend: str | None = None  # how INT8's float-layer plan is measured: "ort", "ort-symmetric", "openvino"

    def takes(self, flag: str, precision: str) -> bool:
        """Whether ``--FLAG`` applies to this target at ``precision``."""
        return any(name == flag and precision in precs for name, precs in self.flags)

    def require(self, precision: str) -> None:
        """Import the conversion tools up front, so a missing one names its package before any work."""

    def build(self, onnx: Path, out_dir: Path, spec: BuildSpec) -> BuildResult:
        """Write the artifact for ``spec.precision`` into ``out_dir`` from the FP32 ``onnx``."""
        raise NotImplementedError

    def runner(self, path: Path, device: str | None, options: RunnerOptions) -> Runner:
        """An inactive runner for the artifact file ``path`` on ``device``."""
        raise NotImplementedError
