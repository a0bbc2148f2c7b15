"""Each training option is defined once: the click options of ``pncd train`` and ``pncd distill``
are generated from the typed options (pncd.options, pncd.distill.options) and take their
defaults from them, and every field of those has its flag (or is listed here as Python-only).
Every other command: tests/test_option_style.py."""

from __future__ import annotations

from dataclasses import MISSING, fields

import click
import pytest


def _click_defaults(command: click.Command) -> dict:
    ctx = click.Context(command)
    out = {}
    for p in command.params:
        if p.name and p.expose_value:
            v = p.get_default(ctx)
            out[p.name] = () if getattr(p, "multiple", False) and not isinstance(v, (list, tuple)) else v  # unset: nothing
    return out


def _expected(run_cls, nested_defaults) -> dict:
    """What the flags' defaults must be, from a typed run class."""
    from pncd.options import DATA_DEFAULTS

    exp = {}
    for f in fields(run_cls):
        if f.name in nested_defaults:
            for g in fields(nested_defaults[f.name]):
                exp[g.name] = getattr(nested_defaults[f.name], g.name)
        elif f.name == "data":
            exp.update({"data": None, **DATA_DEFAULTS, "channels": str(DATA_DEFAULTS["channels"])})
        elif f.default is not MISSING:  # a plain default (required fields have none)
            exp[f.name] = f.default
    return exp


PYTHON_ONLY = {"tensorboard", "on_step", "threads", "rd_p", "embed_dim", "weights"}  # no flag (threads: not exposed)
REQUIRED = {"out", "model", "teacher", "student"}


@pytest.mark.parametrize("which", ["train", "distill"])
def test_click_defaults_come_from_the_dataclasses(which):
    from pncd.commands.distill import distill_command
    from pncd.commands.training import train_command
    from pncd.distill.options import DEFAULT_WEIGHTS, MODULES, DistillOptions, DistillRun
    from pncd.options import TrainRun

    if which == "train":
        command, exp = train_command, _expected(TrainRun, {"train": TrainRun(model="m", out="o").train})
    else:
        run = DistillRun(teacher="t", student="s", out="o")
        command, exp = distill_command, _expected(DistillRun, {"train": run.train, "distill": DistillOptions()})
        exp.update({f"w_{m}": DEFAULT_WEIGHTS[m] for m in MODULES}, modules=",".join(MODULES), weight=(), taps=())
    got = _click_defaults(command)
    for key in PYTHON_ONLY | REQUIRED:
        exp.pop(key, None)
    got.pop("config")
    for key in ("out", "model_name", "teacher", "student"):
        got.pop(key, None)
    exp["clip_grad_norm"] = (TrainRun if which == "train" else DistillRun).default_clip_grad_norm
    assert set(got) == set(exp), (set(got) ^ set(exp))
    assert {k: (tuple(v) if isinstance(v, list) else v) for k, v in exp.items()} == \
        {k: (tuple(v) if isinstance(v, list) else v) for k, v in got.items()}


def test_train_and_distill_clip_defaults_differ_on_purpose():
    from pncd.distill.options import DISTILL_CLIP_GRAD_NORM, DistillRun
    from pncd.options import TrainRun

    from pncd.options import TrainOptions

    assert TrainRun(model="m", out="o").train_options().clip_grad_norm == 0.0
    assert DistillRun(teacher="t", student="s", out="o").train_options().clip_grad_norm == DISTILL_CLIP_GRAD_NORM == 5.0
    # the command's default applies to loop options given without it; an explicit value wins
    assert DistillRun(teacher="t", student="s", out="o", train=TrainOptions(epochs=2)).train_options().clip_grad_norm == 5.0
    assert DistillRun(teacher="t", student="s", out="o", train=TrainOptions(clip_grad_norm=0)).train_options().clip_grad_norm == 0
