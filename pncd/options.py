"""Typed options of ``pncd train`` (and the parts ``pncd distill`` shares), torch-free.

Each option is defined once, here: a field's default, help text and range (``metadata=cli(...)``,
:mod:`pncd.optspec`) are what the click options of :mod:`pncd.commands.training` are generated
from (``tests/test_options.py`` checks that they agree), and :func:`pncd.training.run.train`
takes a :class:`TrainRun`. ``config.json`` records the options under the names of the command's
flags (:meth:`TrainRun.params`), so that ``--resume`` on the command line continues a run started
from Python and the other way round.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

from pncd.optspec import Range, check_ranges, cli, ranges_of

__all__ = ["CONFIG", "DATA_DEFAULTS", "RANGES", "DataOptions", "Range", "RunOptions", "RunResult", "TrainOptions",
           "TrainRun", "check_ranges"]

CONFIG = "config.json"  # a run's resolved configuration (pncd.checkpoint writes and reads it)
MAX_EPOCHS = 100_000  # more never ends on any machine (a typo: --epochs 1e23)
MAX_SIZE = 4096  # square input side; the activation memory is checked against the machine too (pncd.training.memory)
SEED_MAX = 2**32 - 1


@dataclass
class TrainOptions:
    """The training loop's settings (saved in config.json as ``options``)."""

    epochs: int = field(default=50, metadata=cli(low=1, high=MAX_EPOCHS))
    batch: int = field(default=8, metadata=cli(
        "Images per step; more than the train split holds is capped to it (a line says so).", low=1))
    lr: float = field(default=1e-3, metadata=cli(low=0, hint="0 keeps the initial weights"))
    min_lr: float = field(default=1e-5, metadata=cli(low=0))
    weight_decay: float = field(default=0.0, metadata=cli(low=0))
    seed: int = field(default=0, metadata=cli(low=0, high=SEED_MAX))
    workers: int = field(default=0, metadata=cli("DataLoader worker processes.", low=0,
                                                 hint="0 loads in the main process"))
    device: str = field(default="auto", metadata=cli("auto, cpu or cuda."))
    amp: bool = field(default=True, metadata=cli("Mixed precision (CUDA only).", pair=True))
    rotation: float = field(default=15.0, metadata=cli("Max random rotation in degrees.", low=0, high=180))
    lesion_fraction: float | None = field(default=None, metadata=cli(
        "Oversample: this fraction of draws are lesion-bearing slices.", low=0, high=1))
    steps_per_epoch: int | None = field(default=None, metadata=cli(
        "Fixed number of batches per epoch (default: one pass).", low=1,
        hint="leave it out for one pass over the train split per epoch"))
    log_every: int = field(default=10, metadata=cli("Write every loss term to log.jsonl every N steps.", low=1))
    tensorboard: bool = True
    # Clip the global gradient norm of every trained parameter to this (0: off). None: the
    # command's default, ``RunOptions.default_clip_grad_norm``: 0 for ``train`` (the paper's
    # recipe, unchanged), 5 for ``distill``.
    clip_grad_norm: float | None = field(default=None, metadata=cli(
        "Clip the global gradient norm of every trained parameter to this; 0 disables.", low=0,
        hint="0 disables clipping"))


@dataclass
class DataOptions:
    """Which data a run reads and how. ``None``: the command line's default (:data:`DATA_DEFAULTS`,
    each field's ``cli(default=...)``), or for ``pncd distill`` the value the teacher run was
    trained with (so that the student sees the same data)."""

    data: str | None = field(default=None, metadata=cli(  # None: the built-in synthetic phantoms
        "Data set directory (default: the built-in synthetic phantoms).", path="dir"))
    size: int | None = field(default=None, metadata=cli(
        "Square input side, divisible by 16; refused before training when the activations of --batch images "
        "cannot fit in the device's free memory.", default=128, low=16, high=MAX_SIZE))
    channels: int | None = field(default=None, metadata=cli(default=1, choices=("1", "3")))
    num_classes: int | None = field(default=None, metadata=cli("Classes including background.", default=2, low=2))
    normalization: str | None = field(default=None, metadata=cli(default="zscore", choices=("zscore", "minmax")))
    split_seed: int | None = field(default=None, metadata=cli(
        "Seed of the case-level split when there is no splits.json.", default=0, low=0, high=SEED_MAX))
    fold: int | None = field(default=None, metadata=cli(  # a cross-validation fold (replaces splits.json)
        "Cross-validation fold: train on its train cases, pick the best epoch on its val cases (its test cases "
        "are held out); see `pncd data split`.", low=0))
    folds_file: str | None = field(default=None, metadata=cli(
        "The folds file of --fold [default: folds.json or splits_final.json beside the data].", path="file"))

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


# The command line's data defaults (what None resolves to): one definition, each field's cli(default=...)
DATA_DEFAULTS: dict[str, Any] = {f.name: f.metadata["cli"].default for f in fields(DataOptions) if f.name != "data"}
# The numeric options of pncd train and pncd distill (and of TrainOptions/DataOptions), by field name
RANGES: dict[str, Range] = {**ranges_of(TrainOptions), **ranges_of(DataOptions)}

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

    out: str | Path = field(metadata=cli(
        "Run directory to write. Locked while the command runs (.NAME.pncd-lock beside it): a second pncd process "
        "given the same --out is refused at once.", path="dir"))
    data: DataOptions = field(default_factory=DataOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    resume: bool = field(default=False, metadata=cli(  # continue the run in ``out`` from its last finished epoch
        "Continue the run in --out from its last finished epoch, with the settings it recorded (a flag that "
        "contradicts them is refused; --epochs may change)."))
    force: bool = field(default=False, metadata=cli(  # replace an existing run (swapped in when the new one finishes)
        "Replace an existing run: the new one is trained beside it and swapped in when it finishes (files pncd did "
        "not write stay; a folder pncd did not write, without .pncd-owned.json, is refused). Not with --resume."))
    threads: int | None = field(default=None, metadata=cli(  # torch intra-op threads (None: leave as they are)
        "Torch intra-op threads (default: the physical cores, shared among the processes of a torchrun job; "
        "printed). Use 1 when other jobs share the cores.", low=1))
    on_step: list[StepCallback] = field(default_factory=list)

    default_clip_grad_norm: ClassVar[float] = 0.0  # what ``train.clip_grad_norm = None`` means

    def check(self) -> None:
        """Every numeric option within its range (each field's ``cli(low=..., high=...)``), or
        PncdError naming the flag."""
        from pncd.errors import PncdError

        check_ranges(self.train)
        check_ranges(self.data)
        check_ranges(self)
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

    model: str = field(metadata=cli("Registered network (see `pncd models`).", param="model_name"))
    pretrained: str | None = field(default=None, metadata=cli(  # local ImageNet weights for torchvision students
        "Local ImageNet weights for torchvision students.", path="file", exists=True))

    def params(self) -> dict[str, Any]:
        return {**self.common_params(), "model_name": self.model, "pretrained": self.pretrained}


@dataclass
class RunResult:
    """What a finished ``train`` or ``distill`` returns."""

    out: Path
    best_val_dice: float | None  # best per-case val Dice over the epochs (None: no val split)
    epochs: int  # epochs finished, this call and earlier ones (--resume)
    last_epoch: dict[str, Any]  # the last epoch row of log.jsonl written by this call ({} if none)


@dataclass
class GlobalOptions:
    """The ``pncd`` group's own options (before the command name)."""

    debug: bool = field(default=False, metadata=cli("Print the traceback of an error (as PNCD_DEBUG=1 does)."))
    allow_telemetry: bool = field(default=False, metadata=cli(
        "Let OpenVINO and NNCF send their anonymous usage events (off by default: pncd sends nothing)."))
