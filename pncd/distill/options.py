"""Typed options of ``pncd distill``, torch-free: the single source of its defaults.

:class:`DistillOptions` holds the loss weights (by loss name, see :mod:`pncd.distill.base`) and
the built-in losses' settings; :class:`DistillRun` is everything :func:`pncd.distill.run.distill`
needs. The click options of :mod:`pncd.commands.distill` take their defaults from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from pncd.errors import PncdError
from pncd.options import Range, RunOptions, check_ranges

MODULES = ("pmd", "rmd", "rd", "pnscd")  # the built-in losses (pncd.distill.base.BUILTIN), in order
DISTILL_CLIP_GRAD_NORM = 5.0  # distill's --clip-grad-norm default (pncd train's is 0, unchanged)
# Default weights at "CPU scale": with the paper's 0.1/0.9/0.9/0.9 (eq. 10), RMD sent 19-21x, PNSCD
# 2.5-6x and RD 0.9-1.6x Loss_seg's gradient norm into ENet, nearly orthogonal to it, and the run
# collapsed (bench/experiments/distill_gradients.py, bench/results/lgg-cpu/); 0.1/0.1/0.3/0.1 brings each
# feature term below Loss_seg. The paper's weights stay reachable with --weight (or the --w-* flags).
DEFAULT_WEIGHTS = {"pmd": 0.1, "rmd": 0.1, "rd": 0.3, "pnscd": 0.1}
# How the frozen teacher's forward runs (pncd.distill.teacher_runtime); auto: OpenVINO f32 on a CPU
# where it is installed and agrees with torch, else torch; openvino-int8: NNCF INT8, calibrated on
# training slices (opt-in: it changes the teacher's outputs a little)
TEACHER_RUNTIMES = ("auto", "torch", "openvino", "openvino-int8")
# openvino-int8: the least fraction of pixels whose argmax must agree with the float teacher's (the
# LGG teacher: 99.97%), else the INT8 teacher is refused (--int8-agreement)
INT8_MIN_AGREEMENT = 0.99

# The numeric options of DistillOptions (and of pncd distill's flags), by field name
DISTILL_RANGES: dict[str, Range] = {
    "temperature": Range(0, low_open=True), "tau": Range(0, low_open=True), "n_negatives": Range(1),
    "rd_p": Range(1), "embed_dim": Range(1), "pnscd_memory": Range(1), "kd_warmup": Range(0, 1),
    "int8_agreement": Range(0, 1), "weight": Range(0, hint="0 switches the loss off"),
}


@dataclass
class DistillOptions:
    """The distillation part of a run's configuration (defaults: the paper's and EMKD's
    settings, except the loss weights (DEFAULT_WEIGHTS) and the PNSCD form).

    ``weights`` maps loss names to weights; ``modules`` the losses switched on (None: every
    loss in ``weights``). A loss is active when it is switched on with a weight above 0.
    """

    modules: tuple[str, ...] | None = None
    # the default weights and why they are not the paper's: DEFAULT_WEIGHTS above
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    temperature: float = 4.0  # PMD
    rmd_variant: str = "emkd"  # "paper": |e|^2 maps and L1 (eqs. 2-4)
    rd_p: int = 2
    tau: float = 0.07
    n_negatives: int = 4096
    embed_dim: int = 128
    pnscd_norm: str = "crd"  # the crd form's constant Z only
    pnscd_form: str = "infonce"  # "crd": eq. 8's noise-contrastive sum (CRD's form)
    pnscd_memory: int | None = None  # per class; None: 256 (infonce), ceil(N / (K - 1)) (crd)
    kd_warmup: float = 0.1  # fraction of all steps over which the distillation weights ramp 0 -> 1
    taps: list[tuple[str, str]] = field(default_factory=list)
    teacher_runtime: str = "auto"  # one of TEACHER_RUNTIMES
    int8_agreement: float = INT8_MIN_AGREEMENT

    def enabled(self) -> tuple[str, ...]:
        return tuple(self.weights) if self.modules is None else tuple(self.modules)

    def weight(self, name: str) -> float:
        return float(self.weights.get(name, 0.0)) if name in self.enabled() else 0.0

    def active(self) -> list[str]:
        """The losses that run, in the registry's order (their sum's order)."""
        from pncd.distill.base import loss_names

        return [m for m in loss_names() if self.weight(m) > 0]

    def check(self) -> None:
        """Every named loss is registered, every switched-on one has a weight, and every weight
        and setting is within its range (:data:`DISTILL_RANGES`); else PncdError."""
        from pncd.distill.base import loss_names

        valid = loss_names()
        bad = sorted({*self.enabled(), *self.weights} - set(valid))
        if bad:
            raise PncdError(f"unknown distillation loss {', '.join(bad)}; valid: {', '.join(valid)}")
        check_ranges(self, DISTILL_RANGES)
        negative = {k: w for k, w in self.weights.items() if not w >= 0}
        if negative:
            name, w = next(iter(negative.items()))
            raise PncdError(f"--weight {name}={w}: a weight must be >= 0 (0 switches the loss off)")
        missing = [m for m in self.enabled() if m not in self.weights]
        if missing:
            raise PncdError(f"no weight for {', '.join(missing)}: give it with --weight {missing[0]}=W")

    def record(self) -> dict[str, Any]:
        """config.json's ``distill`` section: the keys it always had (``w_<name>`` per weight)."""
        out: dict[str, Any] = {"modules": list(self.enabled())}
        out.update({f"w_{k}": v for k, v in self.weights.items()})
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("modules", "weights")})
        out["taps"] = [list(p) for p in self.taps]
        return out


def parse_weights(values: tuple[str, ...] | list[str]) -> dict[str, float]:
    """``--weight NAME=W`` values (repeatable) as a dict; a malformed one is a PncdError."""
    out: dict[str, float] = {}
    for v in values:
        name, sep, w = str(v).partition("=")
        try:
            weight = float(w) if sep and name.strip() else None
        except ValueError:
            weight = None
        if weight is None or weight < 0:
            raise PncdError(f"--weight {v!r}: write NAME=W with a number W >= 0 (e.g. --weight pmd=0.1)")
        if name.strip() in out and out[name.strip()] != weight:
            raise PncdError(f"--weight {name.strip()} is given twice ({out[name.strip()]} and {weight})")
        out[name.strip()] = weight
    return out


def parse_modules(value: str) -> tuple[str, ...]:
    """``--modules pmd,rd`` (or ``none``) as a tuple of names."""
    return tuple(m.strip() for m in value.split(",") if m.strip() and m.strip() != "none")


def parse_taps(values: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    pairs = []
    for v in values:
        if "=" not in v:
            raise PncdError(f"--taps {v!r}: write STUDENT_MODULE=TEACHER_MODULE")
        s, t = v.split("=", 1)
        pairs.append((s.strip(), t.strip()))
    return pairs


@dataclass(kw_only=True)
class DistillRun(RunOptions):
    """``pncd distill``: a frozen teacher distilled into a student.

    ``data`` fields left None are taken from the teacher run (when the teacher is a run)."""

    teacher: str  # a run directory, or package.module:function (then teacher_weights)
    student: str
    distill: DistillOptions = field(default_factory=DistillOptions)
    teacher_weights: str | None = None
    student_reference: str | None = None  # a run of the student alone, compared with the teacher
    strict: bool = False  # refuse a teacher below student_reference
    check_teacher: bool = True  # evaluate the teacher on the val split first (not on resume)

    default_clip_grad_norm: ClassVar[float] = DISTILL_CLIP_GRAD_NORM

    def params(self) -> dict[str, Any]:
        """The options under ``pncd distill``'s flag names (as config.json records them)."""
        d = self.distill
        legacy = {f"w_{m}": d.weights.get(m, 0.0) for m in MODULES}
        others = [f"{k}={v}" for k, v in d.weights.items() if k not in MODULES]
        return {**self.common_params(), "teacher": self.teacher, "teacher_weights": self.teacher_weights,
                "student": self.student, "modules": ",".join(d.enabled()) or "none", **legacy, "weight": others,
                "temperature": d.temperature, "rmd_variant": d.rmd_variant, "tau": d.tau, "n_negatives": d.n_negatives,
                "pnscd_form": d.pnscd_form, "pnscd_memory": d.pnscd_memory, "pnscd_norm": d.pnscd_norm,
                "kd_warmup": d.kd_warmup, "student_reference": self.student_reference, "strict": self.strict,
                "check_teacher": self.check_teacher, "taps": [f"{s}={t}" for s, t in d.taps],
                "teacher_runtime": d.teacher_runtime, "int8_agreement": d.int8_agreement}
