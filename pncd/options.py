"""Typed options of ``pncd train`` (and the parts ``pncd distill`` shares), torch-free.

Each option is defined once, here: the click options of :mod:`pncd.commands.training` take
their defaults from these dataclasses (``tests/test_options.py`` checks that they agree), and
:func:`pncd.training.run.train` takes a :class:`TrainRun`. ``config.json`` records the options under
the names of the command's flags (:meth:`TrainRun.params`), so that ``--resume`` on the command
line continues a run started from Python and the other way round.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, ClassVar


@dataclass(frozen=True)
class Range:
    """The values a numeric option accepts: ``low``/``high`` (None: unbounded), ``low_open``: ``low``
    itself excluded. ``hint`` ends the refusal. One table (:data:`RANGES`) serves the click options
    (:func:`pncd.commands.training.ranged`) and :meth:`RunOptions.check` (runs built in Python)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    hint: str = ""

    def admits(self, v: float) -> bool:
        low_ok = self.low is None or (v > self.low if self.low_open else v >= self.low)
        return low_ok and (self.high is None or v <= self.high)

    def text(self) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1]``."""
        num = lambda x: f"{int(x)}" if float(x).is_integer() else f"{x:g}"  # noqa: E731
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {num(self.low)}" if self.low is not None else "a number"
        if self.low is None:
            return f"<= {num(self.high)}"
        return f"in {'(' if self.low_open else '['}{num(self.low)}, {num(self.high)}]"


SEED_RANGE = Range(0, 2**32 - 1)
MAX_EPOCHS = 100_000  # more never ends on any machine (a typo: --epochs 1e23)
MAX_SIZE = 4096  # square input side; the activation memory is checked against the machine too (pncd.training.memory)
# The numeric options of pncd train and pncd distill (and of TrainOptions/DataOptions), by field name
RANGES: dict[str, Range] = {
    "epochs": Range(1, MAX_EPOCHS), "batch": Range(1),
    "lr": Range(0, hint="0 keeps the initial weights"), "min_lr": Range(0), "weight_decay": Range(0),
    "seed": SEED_RANGE, "split_seed": SEED_RANGE, "fold": Range(0), "workers": Range(0, hint="0 loads in the main process"),
    "rotation": Range(0, 180), "lesion_fraction": Range(0, 1),
    "steps_per_epoch": Range(1, hint="leave it out for one pass over the train split per epoch"),
    "log_every": Range(1), "clip_grad_norm": Range(0, hint="0 disables clipping"), "size": Range(16, MAX_SIZE), "num_classes": Range(2),
}


def check_ranges(obj: Any, ranges: dict[str, Range]) -> None:
    """PncdError for the first field of ``obj`` outside its range (None fields: not set, skipped)."""
    from pncd.errors import PncdError

    for f in fields(obj):
        v, r = getattr(obj, f.name), ranges.get(f.name)
        if r is None or v is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        whole = str(f.type).split("|")[0].strip() == "int"  # an int field takes whole numbers only (size = 32.7)
        if isinstance(v, bool) or not isinstance(v, int if whole else (int, float)):
            raise PncdError(f"{flag} must be {'a whole number' if whole else 'a number'} {r.text()} (got {v!r})")
        if not r.admits(v):
            hint = f"; {r.hint}" if r.hint else ""
            raise PncdError(f"{flag} must be {r.text()} (got {v!r}){hint}")


@dataclass
class TrainOptions:
    """The training loop's settings (saved in config.json as ``options``)."""

    epochs: int = 50
    batch: int = 8
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.0
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    amp: bool = True
    rotation: float = 15.0
    lesion_fraction: float | None = None
    steps_per_epoch: int | None = None
    log_every: int = 10
    tensorboard: bool = True
    # Clip the global gradient norm of every trained parameter to this (0: off). None: the
    # command's default, ``RunOptions.default_clip_grad_norm``: 0 for ``train`` (the paper's
    # recipe, unchanged), 5 for ``distill``.
    clip_grad_norm: float | None = None


@dataclass
class DataOptions:
    """Which data a run reads and how. ``None``: the default below, or for ``pncd distill``
    the value the teacher run was trained with (so that the student sees the same data)."""

    data: str | None = None  # directory; None: the built-in synthetic phantoms
    size: int | None = None
    channels: int | None = None
    num_classes: int | None = None
    normalization: str | None = None
    split_seed: int | None = None
    fold: int | None = None  # a cross-validation fold (its train/val/test replace splits.json)
    folds_file: str | None = None  # None: folds.json or splits_final.json beside the data

    def resolved(self, teacher_data: dict[str, Any] | None = None) -> DataOptions:
        """Every None filled: from ``teacher_data`` (a run's config.json ``data``), then the defaults."""
        teacher = dict(teacher_data or {})
        if "root" in teacher:
            teacher["data"] = teacher.pop("root")
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None and f.name in teacher:
                v = teacher[f.name]
            out[f.name] = DATA_DEFAULTS[f.name] if v is None and f.name != "data" else v
        return DataOptions(**out)

    def spec(self) -> Any:
        """The :class:`pncd.data.DataSpec` (an absolute root; every None resolved first)."""
        from pncd.data import DataSpec
        from pncd.errors import PncdError

        d = asdict(self.resolved())
        if d["size"] % 16:
            raise PncdError(f"--size {d['size']} is not divisible by 16")
        # an absolute root, so later stages find the data from any working directory
        root = str(Path(d["data"]).resolve()) if d["data"] else None
        folds_file = str(Path(d["folds_file"]).resolve()) if d["folds_file"] else None
        return DataSpec(root=root, size=d["size"], channels=int(d["channels"]), num_classes=d["num_classes"],
                        normalization=d["normalization"], split_seed=d["split_seed"], fold=d["fold"],
                        folds_file=folds_file)


DATA_DEFAULTS: dict[str, Any] = {"size": 128, "channels": 1, "num_classes": 2, "normalization": "zscore", "split_seed": 0,
                                 "fold": None, "folds_file": None}

# Called after every optimizer step with the Trainer (e.g. to stop, or to observe a run).
StepCallback = Callable[[Any], None]


@dataclass(kw_only=True)
class RunOptions:
    """What every training command shares: where it writes and how it treats an existing run.

    ``resume``: continue from the last finished epoch with the options given here (the command
    line restores the recorded ones and refuses contradicting flags; from Python, pass the
    options the run was started with). ``on_step``: callables given the Trainer after every
    optimizer step (to watch a run, or stop it).
    """

    out: str | Path
    data: DataOptions = field(default_factory=DataOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    resume: bool = False  # continue the run in ``out`` from its last finished epoch
    force: bool = False  # replace an existing run (swapped in when the new one finishes)
    threads: int | None = None  # torch intra-op threads (None: leave as they are)
    on_step: list[StepCallback] = field(default_factory=list)

    default_clip_grad_norm: ClassVar[float] = 0.0  # what ``train.clip_grad_norm = None`` means

    def check(self) -> None:
        """Every numeric option within its range (:data:`RANGES`), or PncdError naming the flag."""
        from pncd.errors import PncdError

        check_ranges(self.train, RANGES)
        check_ranges(self.data, RANGES)
        if self.threads is not None and self.threads < 1:
            raise PncdError(f"--threads must be >= 1 (got {self.threads!r})")
        if self.resume and self.force:
            raise PncdError(f"--resume and --force contradict each other: --resume continues the run in {self.out}, "
                            "--force replaces it; pass one of them (nothing was changed)")

    def train_options(self) -> TrainOptions:
        """``train`` with ``clip_grad_norm`` None replaced by this command's default."""
        if self.train.clip_grad_norm is not None:
            return self.train
        return replace(self.train, clip_grad_norm=self.default_clip_grad_norm)

    def common_params(self) -> dict[str, Any]:
        """The shared options under the command's flag names (as ``config.json`` records them)."""
        d = asdict(self.data)
        t = {k: v for k, v in asdict(self.train_options()).items() if k != "tensorboard"}
        return {**t, **d, "channels": None if d["channels"] is None else str(d["channels"]),
                "out": str(self.out), "resume": self.resume, "force": self.force}


@dataclass(kw_only=True)
class TrainRun(RunOptions):
    """``pncd train``: one network trained alone."""

    model: str
    pretrained: str | None = None  # local ImageNet weights for torchvision students

    def params(self) -> dict[str, Any]:
        return {**self.common_params(), "model_name": self.model, "pretrained": self.pretrained}


@dataclass
class RunResult:
    """What a finished ``train`` or ``distill`` returns."""

    out: Path
    best_val_dice: float | None  # best per-case val Dice over the epochs (None: no val split)
    epochs: int  # epochs finished, this call and earlier ones (--resume)
    last_epoch: dict[str, Any]  # the last epoch row of log.jsonl written by this call ({} if none)
