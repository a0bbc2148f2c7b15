"""``pncd train``'s click layer and the options it shares with ``pncd distill``.

Torch-free at import (the training code is imported when a command runs), so that
``pncd train --help`` answers at once. The options are generated from
:class:`pncd.options.DataOptions`, :class:`~pncd.options.TrainOptions` and the run's own fields
(:mod:`pncd.commands._options`). ``--resume`` restores the options a run recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from pncd.commands._options import options, stack
from pncd.commands.config import config_option, resolved_params, threads_option
from pncd.errors import PncdError
from pncd.options import CONFIG, DataOptions, RunOptions, TrainOptions, TrainRun
from pncd.optspec import values_from


def common_training_options(fn: Callable | None = None, *, clip_grad_norm: float = TrainRun.default_clip_grad_norm):
    """Options shared by ``pncd train`` and ``pncd distill``: the fields of
    :class:`pncd.options.DataOptions`, :class:`pncd.options.TrainOptions` and
    :class:`pncd.options.RunOptions`.

    Use bare, or called with the command's own default of --clip-grad-norm (``pncd distill``
    clips at 5; ``pncd train`` keeps the paper's recipe, no clipping)."""
    if fn is None:
        return lambda f: common_training_options(f, clip_grad_norm=clip_grad_norm)
    restore = {"is_eager": True, "callback": _restore_recorded}
    made = stack(options(DataOptions), options(TrainOptions, defaults={"clip_grad_norm": clip_grad_norm}),
                 options(RunOptions, skip=("threads",), click_kw={"out": restore, "resume": restore}))
    return config_option(threads_option(made(fn)))


def train_options(p: dict[str, Any]) -> TrainOptions:
    """The loop options of a command's parsed flags (a run recorded without --log-every or
    --clip-grad-norm: the loop's default, no clipping)."""
    kw = values_from(TrainOptions, p)
    if kw.get("log_every") is None:
        kw.pop("log_every", None)
    kw["clip_grad_norm"] = kw.get("clip_grad_norm") or 0.0
    return TrainOptions(**kw)


def data_options(p: dict[str, Any], inherit: frozenset[str] = frozenset()) -> DataOptions:
    """The data options of a command's parsed flags; those named in ``inherit`` are left None
    (``pncd distill``: not given, so taken from the teacher run)."""
    vals = values_from(DataOptions, p)
    return DataOptions(**{k: (None if k in inherit else v) for k, v in vals.items()})


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
@options(TrainRun, only=("model", "pretrained"))
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
