"""Typed options of ``pncd distill``, torch-free: the single source of its defaults.

:class:`DistillOptions` holds the loss weights (by loss name, see :mod:`pncd.distill.base`) and
the built-in losses' settings; :class:`DistillRun` is everything :func:`pncd.distill.run.distill`
needs. The click options of :mod:`pncd.commands.distill` are generated from these fields (their
``metadata=cli(...)``, :mod:`pncd.optspec`): default, help text and range are written here only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from pncd.errors import PncdError
from pncd.options import RunOptions
from pncd.optspec import Cli, Range, bounds, check_ranges, cli, ranges_of

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


WEIGHT_RANGE = Range(0, hint="0 switches the loss off")  # every loss weight (--weight NAME=W, --w-NAME)


def weight_flag(name: str) -> Cli:
    """``--w-NAME W``: the weight of one built-in loss (the same as ``--weight NAME=W``)."""
    return Cli(f"Same as --weight {name}=W.", low=WEIGHT_RANGE.low, hint=WEIGHT_RANGE.hint)


_WEIGHT_HELP = (f"Weight of a distillation loss (repeat), e.g. --weight pmd=0.1 --weight pnscd=0.9; a loss given a weight "
                f"is switched on, 0 switches it off. Built in: {', '.join(MODULES)} (defaults "
                f"{', '.join(f'{k}={v}' for k, v in DEFAULT_WEIGHTS.items())}; the paper's: pmd=0.1, others 0.9).")


@dataclass
class DistillOptions:
    """The distillation part of a run's configuration (defaults: the paper's and EMKD's
    settings, except the loss weights (DEFAULT_WEIGHTS) and the PNSCD form).

    ``weights`` maps loss names to weights; ``modules`` the losses switched on (None: every
    loss in ``weights``). A loss is active when it is switched on with a weight above 0.
    """

    modules: tuple[str, ...] | None = field(default=None, metadata=cli(
        "Comma-separated built-in losses to switch on (or 'none'); --weight adds to them.", default=",".join(MODULES),
        sep=","))
    # the default weights and why they are not the paper's: DEFAULT_WEIGHTS above
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS), metadata=cli(
        _WEIGHT_HELP, flag="--weight", param="weight", multiple=True, metavar="NAME=W"))
    temperature: float = field(default=4.0, metadata=cli("PMD softmax temperature T.", low=0, low_open=True))
    rmd_variant: str = field(default="emkd", metadata=cli(  # "paper": |e|^2 maps and L1 (eqs. 2-4)
        "emkd: |e|^4 maps, squared L2 (EMKD's); paper: |e|^2 maps, L1 (eqs. 2-4).", choices=("paper", "emkd")))
    rd_p: int = field(default=2, metadata=bounds(1))
    tau: float = field(default=0.07, metadata=cli("PNSCD temperature.", low=0, low_open=True))
    n_negatives: int = field(default=4096, metadata=cli("PNSCD negatives N (batch + memory).", low=1))
    embed_dim: int = field(default=128, metadata=bounds(1))
    pnscd_norm: str = field(default="crd", metadata=cli(  # the crd form's constant Z only
        "crd form only. crd: divide e^s by CRD's constant Z (loss of order 1); none: h = e^s/(e^s + N/M) literally, "
        "whose negative sum is of order N and swamps Loss_seg.", choices=("crd", "none")))
    pnscd_form: str = field(default="infonce", metadata=cli(  # "crd": eq. 8's noise-contrastive sum (CRD's form)
        "infonce: each positive against the log-sum-exp of the negatives (bounded in N); instance: each image's "
        "class region against the other images' regions (instance discrimination); crd: eq. 8's noise-contrastive "
        "sum over negatives (CRD's form).", choices=("infonce", "crd", "instance")))
    pnscd_memory: int | None = field(default=None, metadata=cli(  # per class; None: 256 (infonce), ceil(N / (K - 1)) (crd)
        "PNSCD memory per class. Default: 256 teacher region vectors (infonce), ceil(N/(K-1)) embeddings (crd).",
        low=1))
    kd_warmup: float = field(default=0.1, metadata=cli(  # fraction of all steps over which the weights ramp 0 -> 1
        "Ramp the distillation weights linearly 0 -> 1 over this fraction of all steps (0: off).", low=0, high=1))
    taps: list[tuple[str, str]] = field(default_factory=list, metadata=cli(
        "A feature pair STUDENT_MODULE=TEACHER_MODULE (repeat; last pair feeds PNSCD).", multiple=True))
    teacher_runtime: str = field(default="auto", metadata=cli(
        "How the frozen teacher's forward runs. openvino: converted to OpenVINO, float32, on the CPU (2-4x faster "
        "than torch for DCSAU-Net); auto: openvino on a CPU where it is installed and agrees with torch, else torch; "
        "openvino-int8: quantized by NNCF on 64 training slices, about 2x faster again, refused when its argmax "
        "keeps under --int8-agreement of the float teacher's pixels.", choices=TEACHER_RUNTIMES))
    int8_agreement: float = field(default=INT8_MIN_AGREEMENT, metadata=cli(
        "openvino-int8: the least fraction of pixels (on 64 training slices it was not calibrated on) whose argmax "
        "must agree with the float teacher's.", low=0, high=1))
    teacher_cache: bool = field(default=False, metadata=cli(  # pncd.distill.cache; approximate under augmentation
        "Run the teacher once over every un-augmented training slice before the first epoch and keep its logits "
        "and tapped features in memory (float16) instead of running it at every step (ENet with DCSAU-Net on one CPU "
        "thread: 1.1-1.3x a plain step instead of 2.4-2.5x, plus that one pass). Memory: slices x (logits + tapped "
        "features) x 2 bytes, printed at "
        "start (LGG at 128x128 with its Attention U-Net: about 0.9 GB); refused above half the RAM. Approximate "
        "for augmented samples: the cached outputs are flipped and rotated with the image, not recomputed on it."))

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
        check_ranges(self)
        negative = {k: w for k, w in self.weights.items() if not WEIGHT_RANGE.admits(w)}
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


# The numeric options of DistillOptions (and of pncd distill's flags), by field name
DISTILL_RANGES: dict[str, Range] = {**ranges_of(DistillOptions), "weight": WEIGHT_RANGE}


def parse_weights(values: tuple[str, ...] | list[str]) -> dict[str, float]:
    """``--weight NAME=W`` values (repeatable) as a dict; a malformed one is a PncdError."""
    out: dict[str, float] = {}
    for v in values:
        name, sep, w = str(v).partition("=")
        try:
            weight = float(w) if sep and name.strip() else None
        except ValueError:
            weight = None
        if weight is None or not WEIGHT_RANGE.admits(weight):
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

    teacher: str = field(metadata=cli(  # a run directory, or package.module:function (then teacher_weights)
        "Teacher run directory, or package.module:function for your own network."))
    student: str = field(metadata=cli("Student network: enet, mobilenetv2, resnet18 (any registered model)."))
    distill: DistillOptions = field(default_factory=DistillOptions)
    teacher_weights: str | None = field(default=None, metadata=cli(
        "Weights (.safetensors or .pt) for a factory teacher.", path="file", exists=True))
    student_reference: str | None = field(default=None, metadata=cli(  # a run of the student alone
        "A run of the student trained alone: warn when the teacher's val Dice is not above its best.", path="dir",
        exists=True))
    strict: bool = field(default=False, metadata=cli(  # refuse a teacher below student_reference
        "With --student-reference: refuse a teacher whose val Dice is below the student run's best."))
    check_teacher: bool = field(default=True, metadata=cli(  # not on resume
        "Evaluate the teacher on the val split once before training (skipped on --resume).", pair=True))

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
                "teacher_runtime": d.teacher_runtime, "int8_agreement": d.int8_agreement, "teacher_cache": d.teacher_cache}
