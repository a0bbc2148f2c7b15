"""One option style for every command: each click option is generated from a dataclass field
(:mod:`pncd.commands._options`), and its default is that field's.

The first test reads the source of ``pncd/commands/`` (no click option written by hand); the
others walk every command that ``pncd`` offers and compare each option with its field.
"""

from __future__ import annotations

import ast
from dataclasses import MISSING, fields
from pathlib import Path

import click
import pytest

from pncd.cli import COMMANDS, cli
from pncd.commands._options import SpecOption
from pncd.optspec import field_default, spec_of

COMMANDS_DIR = Path(__file__).resolve().parents[1] / "pncd" / "commands"
GENERATOR = "_options.py"
# command modules allowed to declare click options by hand while they move to the generator (none now)
NOT_CONVERTED_YET: set[str] = set()
CLICK_OPTION_NAMES = {"option", "Option"}


def hand_written_options(source: str) -> list[int]:
    """Line numbers of ``click.option(...)`` / ``click.Option(...)`` calls (or the same names
    imported from click) in a module's source."""
    tree = ast.parse(source)
    imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "click"
                for a in n.names if a.name in CLICK_OPTION_NAMES}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr in CLICK_OPTION_NAMES and isinstance(f.value, ast.Name)
                and f.value.id == "click") or (isinstance(f, ast.Name) and f.id in imported):
            lines.append(node.lineno)
    return lines


def command_modules() -> list[Path]:
    return sorted(p for p in COMMANDS_DIR.glob("*.py") if p.name not in NOT_CONVERTED_YET | {GENERATOR})


def test_the_static_check_sees_a_hand_written_option():
    assert hand_written_options('import click\n@click.option("--x", default=1)\ndef f(x): pass\n') == [2]
    assert hand_written_options("from click import option as o\nd = o('--y')\n") == [2]
    assert hand_written_options("import click\nclick.argument('run')\nclick.version_option('1')\n") == []


@pytest.mark.parametrize("path", command_modules(), ids=lambda p: p.name)
def test_no_command_declares_a_click_option_by_hand(path: Path):
    lines = hand_written_options(path.read_text())
    assert not lines, (f"pncd/commands/{path.name} declares click options by hand (lines {lines}); give the option a "
                       "field with metadata=cli(...) in its options dataclass and generate it (pncd.commands._options)")


def all_commands() -> list[tuple[str, click.Command]]:
    out = []
    for name in COMMANDS:
        cmd = cli.get_command(click.Context(cli), name)
        if isinstance(cmd, click.Group):
            group = click.Context(cmd)
            out += [(f"{name} {sub}", cmd.get_command(group, sub)) for sub in cmd.list_commands(group)]
        else:
            out.append((name, cmd))
    return out


def test_every_option_of_every_command_is_generated():
    for name, cmd in all_commands():
        ctx = click.Context(cmd)
        hand = [p.name for p in cmd.get_params(ctx) if isinstance(p, click.Option) and not isinstance(p, SpecOption)
                and p is not cmd.get_help_option(ctx)]
        assert not hand, f"pncd {name}: options not generated from a dataclass field: {hand}"


# Command-line defaults that depend on the command (one field, two commands): the run class says which
COMMAND_DEFAULTS = {("train", "clip_grad_norm"): "pncd.options:TrainRun",
                    ("distill", "clip_grad_norm"): "pncd.distill.options:DistillRun"}


def expected_default(command: str, p: SpecOption):
    """What the click default of ``p`` must be, from its dataclass field (rules of pncd.optspec.Cli)."""
    import importlib

    f = next(f for f in fields(p.source) if f.name == p.field_name)
    spec = spec_of(f)
    if (command, f.name) in COMMAND_DEFAULTS:
        module, cls = COMMAND_DEFAULTS[command, f.name].split(":")
        return getattr(importlib.import_module(module), cls).default_clip_grad_norm
    v = spec.default if spec.default is not None else field_default(f)
    if spec.sep and isinstance(v, tuple):
        v = spec.sep.join(v) or "none"
    if spec.multiple:
        return tuple(v) if isinstance(v, (list, tuple)) else ()
    if spec.choices and v is not None and v is not MISSING:
        return str(v)
    return v


def test_each_click_default_is_its_dataclass_default():
    from pncd.distill.options import DEFAULT_WEIGHTS

    checked = 0
    for name, cmd in all_commands():
        ctx = click.Context(cmd)
        for p in cmd.get_params(ctx):
            if not isinstance(p, SpecOption):
                continue
            got = p.get_default(ctx)
            if p.source is None:  # the command's own: --config, --gate, distill's --w-NAME
                want = DEFAULT_WEIGHTS[p.name[2:]] if p.name.startswith("w_") else None
                assert got == want, (name, p.name)
                continue
            want = expected_default(name, p)
            if want is MISSING or p.required:
                assert p.required, f"pncd {name} {p.opts[0]}: {p.source.__name__}.{p.field_name} has no default"
                continue
            if p.is_flag and not p.secondary_opts:
                want = False  # a flag is off unless given (--no-x: the field True -> False)
            assert got == want, (f"pncd {name} {p.opts[0]}: click default {got!r}, "
                                 f"{p.source.__name__}.{p.field_name} {want!r}")
            checked += 1
    assert checked > 150


def test_an_option_written_once_changes_everywhere():
    """A field's help, default and range reach --help, the parsed value and the range check."""
    from click.testing import CliRunner

    from pncd.commands.training import train_command

    text = " ".join(CliRunner().invoke(train_command, ["--help"], terminal_width=200).output.split())
    assert "--epochs INTEGER RANGE [default: 50; 1<=x<=100000]" in text
    assert ("--lesion-fraction FLOAT RANGE Oversample: this fraction of draws are lesion-bearing slices. "
            "[0<=x<=1]") in text
    bad = CliRunner().invoke(train_command, ["--model", "m", "--out", "o", "--size", "8192"])
    assert bad.exit_code == 2 and "8192 is not in the range 16<=x<=4096" in bad.output
