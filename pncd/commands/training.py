"""``pncd train``'s click layer and the options it shares with ``pncd distill``.

Torch-free at import (the training code is imported when a command runs), so that
``pncd train --help`` answers at once. ``--resume`` restores the options a run recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pncd.commands.config import config_option, resolved_params, threads_option
from pncd.errors import PncdError
from pncd.options import DATA_DEFAULTS, RANGES, DataOptions, Range, TrainOptions, TrainRun

CONFIG = "config.json"  # pncd.checkpoint.CONFIG (that module imports torch)


_T = TrainOptions()  # the defaults of every loop option (one definition: pncd.options)
_D = DATA_DEFAULTS


def ranged(kind: type, name: str, ranges: dict[str, Range] = RANGES) -> click.ParamType:
    """The click type of a numeric option, bounded by its :class:`pncd.options.Range` (the one
    table that :meth:`pncd.options.RunOptions.check` applies too): --help shows the range and a
    value outside it is a usage error (exit 2) before anything is loaded."""
    r = ranges[name]
    if kind is int:
        low = None if r.low is None else int(r.low) + (1 if r.low_open else 0)
        return click.IntRange(min=low, max=None if r.high is None else int(r.high))
    return click.FloatRange(min=r.low, max=r.high, min_open=r.low_open)


def common_training_options(fn=None, *, clip_grad_norm: float = TrainRun.default_clip_grad_norm):
    """Options shared by ``pncd train`` and ``pncd distill``, their defaults taken from
    :class:`pncd.options.TrainOptions` and :data:`pncd.options.DATA_DEFAULTS`.

    Use bare, or called with the command's own default of --clip-grad-norm (``pncd distill``
    clips at 5; ``pncd train`` keeps the paper's recipe, no clipping)."""
    if fn is None:
        return lambda f: common_training_options(f, clip_grad_norm=clip_grad_norm)
    opts = [
        click.option("--data", type=click.Path(file_okay=False), default=None, help="Data set directory (default: the built-in synthetic phantoms)."),
        click.option("--out", type=click.Path(file_okay=False), required=True, is_eager=True, callback=_restore_recorded,
                     help="Run directory to write. Locked while the command runs (.NAME.pncd-lock beside it): "
                          "a second pncd process given the same --out is refused at once."),
        click.option("--epochs", type=ranged(int, "epochs"), default=_T.epochs, show_default=True),
        click.option("--batch", type=ranged(int, "batch"), default=_T.batch, show_default=True,
                     help="Images per step; more than the train split holds is capped to it (a line says so)."),
        click.option("--size", type=ranged(int, "size"), default=_D["size"], show_default=True,
                     help="Square input side, divisible by 16; refused before training when the activations of --batch "
                          "images cannot fit in the device's free memory."),
        click.option("--channels", type=click.Choice(["1", "3"]), default=str(_D["channels"]), show_default=True),
        click.option("--num-classes", type=ranged(int, "num_classes"), default=_D["num_classes"], show_default=True, help="Classes including background."),
        click.option("--normalization", type=click.Choice(["zscore", "minmax"]), default=_D["normalization"], show_default=True),
        click.option("--lr", type=ranged(float, "lr"), default=_T.lr, show_default=True),
        click.option("--min-lr", type=ranged(float, "min_lr"), default=_T.min_lr, show_default=True),
        click.option("--weight-decay", type=ranged(float, "weight_decay"), default=_T.weight_decay, show_default=True),
        click.option("--seed", type=ranged(int, "seed"), default=_T.seed, show_default=True),
        click.option("--split-seed", type=ranged(int, "split_seed"), default=_D["split_seed"], show_default=True,
                     help="Seed of the case-level split when there is no splits.json."),
        click.option("--fold", type=ranged(int, "fold"), default=None,
                     help="Cross-validation fold: train on its train cases, pick the best epoch on its val cases "
                          "(its test cases are held out); see `pncd data split`."),
        click.option("--folds-file", type=click.Path(dir_okay=False), default=None,
                     help="The folds file of --fold [default: folds.json or splits_final.json beside the data]."),
        click.option("--workers", type=ranged(int, "workers"), default=_T.workers, show_default=True, help="DataLoader worker processes."),
        click.option("--device", default=_T.device, show_default=True, help="auto, cpu or cuda."),
        click.option("--amp/--no-amp", default=_T.amp, show_default=True, help="Mixed precision (CUDA only)."),
        click.option("--rotation", type=ranged(float, "rotation"), default=_T.rotation, show_default=True, help="Max random rotation in degrees."),
        click.option("--lesion-fraction", type=ranged(float, "lesion_fraction"), default=_T.lesion_fraction, help="Oversample: this fraction of draws are lesion-bearing slices."),
        click.option("--steps-per-epoch", type=ranged(int, "steps_per_epoch"), default=_T.steps_per_epoch, help="Fixed number of batches per epoch (default: one pass)."),
        click.option("--log-every", type=ranged(int, "log_every"), default=_T.log_every, show_default=True, help="Write every loss term to log.jsonl every N steps."),
        click.option("--clip-grad-norm", type=ranged(float, "clip_grad_norm"), default=clip_grad_norm, show_default=True,
                     help="Clip the global gradient norm of every trained parameter to this; 0 disables."),
        click.option("--resume", is_flag=True, is_eager=True, callback=_restore_recorded,
                     help="Continue the run in --out from its last finished epoch, with the settings it recorded "
                          "(a flag that contradicts them is refused; --epochs may change)."),
        click.option("--force", is_flag=True, help="Replace an existing run: the new one is trained beside it and "
                     "swapped in when it finishes (files pncd did not write stay; a folder pncd did not write, "
                     "without .pncd-owned.json, is refused). Not with --resume."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return config_option(threads_option(fn))


def train_options(p: dict[str, Any]) -> TrainOptions:
    """The loop options of a command's parsed flags."""
    return TrainOptions(epochs=p["epochs"], batch=p["batch"], lr=p["lr"], min_lr=p["min_lr"], weight_decay=p["weight_decay"],
                        seed=p["seed"], workers=p["workers"], device=p["device"], amp=p["amp"], rotation=p["rotation"],
                        lesion_fraction=p["lesion_fraction"], steps_per_epoch=p["steps_per_epoch"],
                        log_every=p.get("log_every") or _T.log_every, clip_grad_norm=p.get("clip_grad_norm") or 0.0)


def data_options(p: dict[str, Any], inherit: frozenset[str] = frozenset()) -> DataOptions:
    """The data options of a command's parsed flags; those named in ``inherit`` are left None
    (``pncd distill``: not given, so taken from the teacher run)."""
    vals = {k: (None if k in inherit else p[k]) for k in ("data", "size", "channels", "num_classes", "normalization", "split_seed", "fold", "folds_file")}
    if vals["channels"] is not None:
        vals["channels"] = int(vals["channels"])
    return DataOptions(**vals)


# --resume: options that may differ from what the run recorded (they do not change its result,
# or are meant to change: more epochs). Everything else the run recorded is restored.
RESUME_MAY_CHANGE = frozenset({"epochs", "workers", "device", "threads", "log_every"})
_NOT_RESTORED = frozenset({"out", "resume", "force", "config", "pretrained"})


def recorded_options(out: str | Path) -> dict[str, Any] | None:
    """The options a run in ``out`` recorded in its config.json (None when there is no run)."""
    cfg_path = Path(out) / CONFIG
    if not cfg_path.is_file():
        return None
    from pncd.checkpoint import read_run_config

    cfg = read_run_config(out)
    opts = dict(cfg.get("options") or {})
    data = cfg.get("data") or {}
    if "root" in data:  # the resolved root: the recorded --data may be relative to another directory
        opts["data"] = data["root"]
    return opts


def _restore_recorded(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Eager callback of --out and --resume: once both are known and --resume is set, the run's
    recorded options become the defaults of every option not given (flags and --config win, and
    ``check_resume`` then refuses those that contradict the record)."""
    seen = ctx.meta.setdefault("pncd.resume", {})
    seen[param.name] = value
    if seen.get("resume") and seen.get("out") and "recorded" not in seen:
        recorded = recorded_options(seen["out"])
        seen["recorded"] = recorded
        if recorded:
            names = {p.name for p in ctx.command.params if p.name}
            restore = {k: v for k, v in recorded.items() if k in names and k not in _NOT_RESTORED}
            ctx.default_map = {**restore, **(ctx.default_map or {})}
    return value


def _same(key: str, given: Any, recorded: Any) -> bool:
    if key in ("data", "teacher") and (key == "data" or Path(str(given)).exists()):
        return (None if given is None else str(Path(given).resolve())) == (None if recorded is None else str(Path(recorded).resolve()))
    if isinstance(given, tuple):
        given = list(given)
    if isinstance(given, (int, float)) and isinstance(recorded, (int, float)) and not isinstance(given, bool):
        return float(given) == float(recorded)
    return given == recorded or str(given) == str(recorded) if given is not None and recorded is not None else given == recorded


def check_resume(out: str | Path) -> None:
    """--resume: refuse an option whose value contradicts what the run recorded, naming both."""
    ctx = click.get_current_context(silent=True)
    recorded = recorded_options(out)
    if ctx is None or not recorded:
        return
    src = click.core.ParameterSource
    for key, value in ctx.params.items():
        if key in _NOT_RESTORED or key in RESUME_MAY_CHANGE or key not in recorded:
            continue
        if not _same(key, value, recorded[key]):
            how = "--config" if ctx.get_parameter_source(key) == src.DEFAULT_MAP else "the command line"
            flag = "--" + key.replace("_", "-") if key != "model_name" else "--model"
            raise PncdError(f"--resume: {flag} {value!r} (from {how}) contradicts the run's recorded {flag} "
                            f"{recorded[key]!r} in {Path(out) / CONFIG}; drop the flag to continue the run, "
                            "or start a new run with another --out")


@click.command("train")
@common_training_options
@click.option("--model", "model_name", required=True, help="Registered network (see `pncd models`).")
@click.option("--pretrained", type=click.Path(dir_okay=False, exists=True), default=None, help="Local ImageNet weights for torchvision students.")
@click.pass_context
def train_command(ctx: click.Context, model_name: str, pretrained: str | None, **p: Any) -> None:
    """Train one network alone (a teacher, or a student baseline) with the paper's recipe.

    Validates every epoch (per-case Dice on the val split) and keeps best.safetensors,
    last.safetensors and config.json in --out. Also runs under torchrun (DDP). Numeric options
    outside their range (shown below, e.g. --epochs 0) are refused before anything is written.

    \b
    Examples:
      pncd train --model unet --data path/to/lgg-flair --size 128 --epochs 5 --out runs/unet
      pncd train --model dcsaunet --out runs/teacher --epochs 3          # synthetic data
      pncd train --model enet --out runs/enet --resume                   # continue a run
      torchrun --nproc-per-node 2 -m pncd.cli train --model enet --out runs/enet-ddp
    """
    from pncd.training.run import train

    params = resolved_params(ctx)
    if p["resume"]:
        check_resume(p["out"])
    run = TrainRun(model=model_name, pretrained=pretrained, out=p["out"], resume=p["resume"], force=p["force"],
                   data=data_options(p), train=train_options(p))
    result = train(run, record=params)
    click.echo(f"run written to {result.out}")
