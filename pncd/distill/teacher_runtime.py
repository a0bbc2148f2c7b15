"""How the frozen teacher's forward pass runs in ``pncd distill`` (``--teacher-runtime``).

The teacher's forward is most of a distillation step on a CPU. Besides eager torch
(:class:`TorchTeacher`: Conv+BN folded, channels_last, hooks on the tapped modules), the teacher
can run through OpenVINO (:class:`OpenVinoTeacher`): the torch teacher, wrapped so that it
returns ``(logits, *tapped features)`` (:class:`TappedTeacher`), converted with
``openvino.convert_model`` and compiled for the CPU with ``INFERENCE_PRECISION_HINT = f32``
(not the CPU's default, which is bf16 where the CPU has AVX-512 BF16 / AMX, and agrees with torch
to only ~2e-2). Measured with the DCSAU-Net teacher, batch 8, one thread: 2.2-2.8x faster than
eager torch at 128x128 (about 225 vs 490-630 ms) and 2.5-3.6x at 256x256 (0.9-1.1 vs 2.8-3.2 s),
agreeing with it to ~2e-6 relative (bench/results/distill_overhead-cpu-1thread-openvino-*.json;
ONNX Runtime, also measured, was slower than OpenVINO: 257 ms and 1.04 s).

Either way the losses get the same tensors: float32, contiguous, on the device, outside autograd.
``auto`` (the default) takes OpenVINO on a CPU when it is installed, converts and agrees with
torch on a random batch; otherwise (CUDA, torchrun, OpenVINO missing or failing) torch, with a
one-line note. ``torch.compile`` was measured too (1.2-1.4x faster than eager, 40-60 s to compile
on two cores, and again for each new batch shape) and is not offered.

``openvino-int8`` (opt-in) goes one step further: the converted teacher is quantized by NNCF
(:func:`pncd.targets.openvino_build.quantize`, the export's INT8 route: MIXED preset, min-max
ranges, the first layer kept in float) on ``CALIBRATION_SLICES`` training slices picked evenly
over the training split, before any augmentation or sampling (no random stream is touched). Its
outputs are not torch's: at start-up it is checked on as many other training slices, and refused
when its per-pixel argmax agrees with the float teacher's on less than ``INT8_MIN_AGREEMENT`` of
the pixels; the agreement and the largest relative error of the logits and features are recorded in
config.json. Measured on one thread, batch 8 (bench/results/distill_overhead-cpu-*-int8-*.json):
DCSAU-Net's forward as distillation runs it 2.0x faster than OpenVINO f32 (95 vs 192 ms at
128x128, 380 vs 771 ms at 256x256). The LGG Attention U-Net teacher kept its argmax on 99.97%
of the check slices' pixels (the distilled runs' config.json). What it does to the students is
measured by bench/experiments/lgg_distill.py --int8-teacher (bench/results/lgg-distill/): on ENet
it cost 0.020 Dice on average against the float teacher, so it is opt-in.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from pncd.distill.options import INT8_MIN_AGREEMENT, TEACHER_RUNTIMES
from pncd.console import warn
from pncd.errors import PncdError
from pncd.models import FeatureTaps

# |OpenVINO f32 - torch| / max|torch| allowed per output in the check at start-up (f32 agrees to ~1e-5)
AGREEMENT_TOLERANCE = 1e-3
# openvino-int8: training slices NNCF calibrates on (and as many others that check it)
CALIBRATION_SLICES = 64


class TeacherRunner:
    """A frozen teacher's forward pass: ``runner(images) -> (logits, [tapped features])``."""

    name = "?"

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError


class TorchTeacher(TeacherRunner):
    """Eager torch, under ``torch.inference_mode``; ``taps`` hold the tapped modules' outputs
    (None: no feature loss is active, the logits only)."""

    name = "torch"

    def __init__(self, teacher: nn.Module, taps: FeatureTaps | None, names: list[str]) -> None:
        self.teacher, self.taps, self.names = teacher, taps, names

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.inference_mode():
            logits = self.teacher(images.contiguous(memory_format=torch.channels_last))
        # inference tensors cannot join autograd: clone (into the default layout) the few the losses read
        feats = [self.taps[n].clone(memory_format=torch.contiguous_format) for n in self.names] if self.taps else []
        return logits.clone(memory_format=torch.contiguous_format), feats


class TappedTeacher(nn.Module):
    """The teacher as one graph for export: ``forward(x) -> (logits, *features of names)``,
    read from the forward hooks ``taps`` hold on the teacher."""

    def __init__(self, teacher: nn.Module, taps: FeatureTaps | None, names: list[str]) -> None:
        super().__init__()
        self.teacher, self.names = teacher, names
        self.__dict__["taps"] = taps  # not a module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.teacher(x)
        taps: FeatureTaps | None = self.__dict__["taps"]
        return (logits, *(taps[n] for n in self.names)) if taps is not None else (logits,)


class OpenVinoTeacher(TeacherRunner):
    """The teacher converted to OpenVINO (batch size left dynamic) and compiled for the CPU in
    float32 with ``threads`` threads (torch's count, so that the two share the cores alike).

    ``calibration`` (N, C, H, W real images): quantize to INT8 with NNCF on them first (the float
    parts still run in f32: the CPU's bf16 default fails to compile some INT8 graphs)."""

    name = "openvino"

    def __init__(self, teacher: nn.Module, taps: FeatureTaps | None, names: list[str], example: torch.Tensor,
                 threads: int, calibration: np.ndarray | None = None) -> None:
        import openvino as ov

        from pncd.targets.openvino_core import compile_model

        with torch.no_grad(), warnings.catch_warnings():  # tracer warnings: the outputs are checked against torch's
            warnings.simplefilter("ignore")
            model = ov.convert_model(TappedTeacher(teacher, taps, names).eval(), example_input=example)
        self.quantization: dict[str, Any] | None = None
        if calibration is not None:
            model, self.quantization = _quantize_teacher(model, calibration)
            self.name = "openvino-int8"
        self.compiled = compile_model(model, "CPU", precision_hint="f32", threads=int(threads))
        self.request = self.compiled.create_infer_request()
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)  # "f32"
        if calibration is not None:
            self.precision = f"int8 ({self.precision} between)"

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = images.detach().to(torch.float32).contiguous().numpy()
        res = self.request.infer({0: x}, share_inputs=True)  # outputs are copied out of the request
        outs = [torch.from_numpy(res[port]) for port in self.compiled.outputs]
        return outs[0], outs[1:]


def _quantize_teacher(model: Any, calibration: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The OpenVINO teacher quantized by the export's INT8 route on ``calibration``, and its record."""
    from pncd.data.images import ImageSet
    from pncd.targets.openvino_build import quantize

    images = np.ascontiguousarray(calibration, dtype=np.float32)
    calib = ImageSet(images, np.zeros((len(images), *images.shape[2:]), np.int64), [""] * len(images), "train", "", len(images))
    with torch.random.fork_rng(devices=[]):  # NNCF must not move the run's random streams
        state = np.random.get_state()
        try:
            q, record = quantize(model, "x", calib, "minmax", False, None, 0.0, 2, ("first",))
        finally:
            np.random.set_state(state)
    record["calibration_slices"] = len(images)
    return q, record


def calibration_slices(images: np.ndarray, count: int = CALIBRATION_SLICES) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, check): ``count`` training slices spread evenly over ``images`` (N, C, H, W)
    and up to ``count`` others between them, for ``openvino-int8``."""
    from pncd.data.images import evenly_spaced

    n = len(images)
    calib = evenly_spaced(n, count)
    rest = np.setdiff1d(np.arange(n), calib)
    check = rest[evenly_spaced(len(rest), count)] if len(rest) else calib
    return images[calib], images[check]


def int8_agreement(runner: TeacherRunner, reference: TeacherRunner, images: np.ndarray, batch: int = 8) -> dict[str, float]:
    """How far ``runner`` (INT8) is from ``reference`` on real ``images``: the fraction of pixels
    whose argmax agrees, and the largest relative error of the logits and of any feature."""
    agree = total = 0
    logit_err = feat_err = 0.0
    for s in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch], dtype=np.float32))
        (g, g_feats), (r, r_feats) = runner(x), reference(x)
        agree += int((g.argmax(1) == r.argmax(1)).sum())
        total += g.shape[0] * g.shape[2] * g.shape[3]
        logit_err = max(logit_err, relative_error(g, r))
        feat_err = max([feat_err, *(relative_error(a, b) for a, b in zip(g_feats, r_feats))])
    return {"argmax_agreement": agree / max(total, 1), "logits_relative_error": logit_err,
            "features_relative_error": feat_err, "check_slices": len(images)}


def relative_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref| (0 for two zero tensors)."""
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    diff = float((a.float() - ref.float()).abs().max()) if ref.numel() else 0.0
    return diff / scale if scale > 0 else diff


def disagreement(runner: TeacherRunner, reference: TeacherRunner, example: torch.Tensor) -> float:
    """The largest relative error of ``runner``'s outputs against ``reference``'s on ``example``."""
    got_logits, got_feats = runner(example)
    ref_logits, ref_feats = reference(example)
    pairs = [(got_logits, ref_logits), *zip(got_feats, ref_feats)]
    if any(g.shape != r.shape for g, r in pairs):
        return float("inf")
    return max(relative_error(g, r) for g, r in pairs)


def random_example(channels: int, size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A fixed random batch from its own generator (the global RNG streams are not touched)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, size, size, generator=gen)


def _note(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        warn(message)


def _why_torch(device: torch.device) -> str | None:
    """Why OpenVINO cannot run this teacher here (None: it can be tried)."""
    if device.type != "cpu":
        return f"OpenVINO runs the teacher on the CPU only, and this run is on {device.type}"
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return "under torchrun every rank keeps the torch teacher"
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "OpenVINO is not installed (pip install openvino)"
    return None


def _openvino(teacher: nn.Module, taps: FeatureTaps | None, names: list[str], example: torch.Tensor,
              reference: TeacherRunner) -> tuple[OpenVinoTeacher | None, str]:
    """The OpenVINO teacher, checked against ``reference``; (None, why) when that fails."""
    try:
        runner = OpenVinoTeacher(teacher, taps, names, example[:1], torch.get_num_threads())
        err = disagreement(runner, reference, example)
    except Exception as e:  # a teacher OpenVINO cannot convert or run: say why, in one line
        return None, _failed("convert or run", e)
    if not err <= AGREEMENT_TOLERANCE:
        return None, f"OpenVINO's teacher outputs differ from torch's by {err:.2e} (relative; allowed {AGREEMENT_TOLERANCE:g})"
    return runner, ""


def _failed(what: str, e: Exception) -> str:
    return f"OpenVINO could not {what} the teacher ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})"


def _openvino_int8(teacher: nn.Module, taps: FeatureTaps | None, names: list[str], images: np.ndarray | None,
                   reference: TeacherRunner, min_agreement: float) -> tuple[OpenVinoTeacher | None, str]:
    """The INT8 OpenVINO teacher calibrated on training ``images`` and checked on others; (None, why)."""
    if images is None or len(images) == 0:
        return None, "INT8 needs training images to calibrate on, and none were given"
    calib, check = calibration_slices(images)
    try:
        runner = OpenVinoTeacher(teacher, taps, names, torch.from_numpy(np.ascontiguousarray(calib[:1], dtype=np.float32)),
                                 torch.get_num_threads(), calibration=calib)
        agreement = int8_agreement(runner, reference, check)
    except PncdError:
        raise
    except Exception as e:
        return None, _failed("quantize or run", e)
    assert runner.quantization is not None
    runner.quantization["check"] = agreement
    if not agreement["argmax_agreement"] >= min_agreement:
        return None, (f"the INT8 teacher's argmax agrees with the float teacher's on {agreement['argmax_agreement']:.2%} "
                      f"of {len(check)} training slices' pixels (at least {min_agreement:.1%} needed)")
    return runner, ""


def build_runner(requested: str, teacher: nn.Module, taps: FeatureTaps | None, names: list[str], channels: int,
                 size: int, device: torch.device | str, note: Callable[[str], None] = _note,
                 calibration: np.ndarray | None = None, min_agreement: float = INT8_MIN_AGREEMENT) -> TeacherRunner:
    """The runner of ``--teacher-runtime requested`` for a teacher already prepared
    (:func:`pncd.distill.teacher.prepare_teacher`) with ``taps`` on the modules ``names``.

    ``openvino`` refuses (PncdError) where it cannot run or does not agree with torch; ``auto``
    then falls back to torch and says why in one line. ``openvino-int8`` calibrates on
    ``calibration`` (the training split's preprocessed images, N x C x H x W) and refuses where
    it cannot run or keeps less than ``min_agreement`` of the argmax (see the module's docstring)."""
    if requested not in TEACHER_RUNTIMES:
        raise PncdError(f"--teacher-runtime {requested!r} is unknown; use one of {', '.join(TEACHER_RUNTIMES)}")
    reference = TorchTeacher(teacher, taps, names)
    if requested == "torch":
        return reference
    why = _why_torch(torch.device(device))
    no_openvino = why is not None  # then neither OpenVINO runtime can run here
    runner: TeacherRunner | None = None
    if why is None and requested == "openvino-int8":
        runner, why = _openvino_int8(teacher, taps, names, calibration, reference, min_agreement)
    elif why is None:
        runner, why = _openvino(teacher, taps, names, random_example(channels, size), reference)
    if runner is not None:
        return runner
    if requested != "auto":
        raise PncdError(f"--teacher-runtime {requested}: {why}; use --teacher-runtime torch"
                        + (" or openvino" if requested == "openvino-int8" and not no_openvino else ""))
    note(f"note: the teacher runs in torch ({why})")
    return reference


def runtime_record(runner: TeacherRunner) -> dict[str, Any]:
    """What config.json records of the runtime that ran the teacher."""
    out: dict[str, Any] = {"teacher_runtime_used": runner.name}
    if isinstance(runner, OpenVinoTeacher):
        out["teacher_runtime_precision"] = runner.precision
        if runner.quantization is not None:
            out["teacher_quantization"] = runner.quantization
    return out
