"""The one way a command gets its click options: generated from dataclass fields.

Each option is a field of an options dataclass whose ``metadata["cli"]`` (:class:`pncd.optspec.Cli`)
says how it appears on the command line; :func:`options` turns those fields into click options,
so a default, a help text or a range is written in the dataclass and nowhere else. A command's
own option that belongs to no dataclass (``--config``, ``--gate``) is one :func:`option` call
with its :class:`~pncd.optspec.Cli`. ``tests/test_option_style.py`` checks that no command
declares a click option by hand and that every generated default is its field's.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any, Callable

import click

from pncd.optspec import Cli, cli_default, kind_of, spec_of

Decorator = Callable[[Callable], Callable]


class SpecOption(click.Option):
    """A click option generated from a field: it keeps where it came from (``source``: the
    dataclass, or None for a free :func:`option`) and its :class:`Cli`."""

    def __init__(self, *args: Any, spec: Cli, source: type | None = None, field_name: str | None = None,
                 **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.spec, self.source, self.field_name = spec, source, field_name


def _range_type(kind: type | None, spec: Cli) -> click.ParamType | None:
    r = spec.range
    if r is None:
        return None
    if kind is int:
        low = None if r.low is None else int(r.low) + (1 if r.low_open else 0)
        high = None if r.high is None else int(r.high) - (1 if r.high_open else 0)
        return click.IntRange(min=low, max=high)
    return click.FloatRange(min=r.low, max=r.high, min_open=r.low_open, max_open=r.high_open)


def click_type(spec: Cli, kind: type | None, as_path: bool = False) -> click.ParamType | type | None:
    """The click type of a value: a choice, a path, a bounded or plain number, or a string."""
    if spec.choices:
        return click.Choice(spec.choices)
    if spec.path:
        return click.Path(file_okay=spec.path != "dir", dir_okay=spec.path != "file", exists=spec.exists,
                          path_type=Path if as_path else None)
    if spec.text:
        return None
    return _range_type(kind, spec) or (kind if kind in (int, float) else None)


def option(name: str, spec: Cli, default: Any = None, kind: type | None = None, *, as_path: bool = False,
           source: type | None = None, field_name: str | None = None, **click_kw: Any) -> Decorator:
    """One click option from its :class:`Cli`: ``name`` is click's parameter name (unless
    ``spec.param``), ``default`` the command line's default (MISSING: required), ``kind`` the
    value's type when the default does not show it. ``click_kw``: what only the command line
    knows (a callback, eagerness, a type read at run time)."""
    flag = spec.flag or "--" + name.replace("_", "-")
    param = spec.param or name
    kind = kind or (type(default) if default not in (None, MISSING) else None)
    kw: dict[str, Any] = {"help": spec.help, "cls": SpecOption, "spec": spec, "source": source,
                          "field_name": field_name, "metavar": spec.metavar}
    if kind is bool and not spec.pair:  # off unless given (--no-x: the field True -> False)
        return click.option(flag, param, is_flag=True, **kw, **click_kw)
    if spec.pair:
        return click.option(f"{flag}/--no-{flag[2:]}", param, default=default, show_default=True, **kw, **click_kw)
    if spec.required or default is MISSING:
        kw["required"] = True
    else:
        if spec.choices and default is not None:
            default = str(default)
        kw["default"] = default
        if default not in (None, (), ""):
            kw["show_default"] = True
    if spec.multiple:
        kw["multiple"] = True
    t = click_type(spec, kind, as_path)
    if t is not None:
        kw["type"] = t
    return click.option(flag, param, **kw, **click_kw)


def field_option(cls: type, f: Field, defaults: dict[str, Any] | None = None, **click_kw: Any) -> Decorator:
    """The click option of one field of ``cls`` (its :class:`Cli` must be set)."""
    spec = spec_of(f)
    assert spec is not None, f"{cls.__name__}.{f.name} has no cli() metadata"
    default = cli_default(f, defaults)
    if spec.multiple and default is not MISSING and not isinstance(default, (tuple, list)):
        default = ()  # a repeatable option adds to the field's default (or is empty)
    elif isinstance(default, list):
        default = tuple(default)
    as_path = str(f.type).split("|")[0].strip() == "Path"  # the value's type: the annotation's first alternative
    return option(f.name, spec, default, kind_of(f), as_path=as_path, source=cls, field_name=f.name, **click_kw)


def options(*sources: type, only: tuple[str, ...] | None = None, skip: tuple[str, ...] = (),
            defaults: dict[str, Any] | None = None, click_kw: dict[str, dict[str, Any]] | None = None) -> Decorator:
    """A decorator adding the click option of every :func:`~pncd.optspec.cli` field of ``sources``,
    in their order (``only`` / ``skip``: by field name). ``defaults``: command-line defaults that
    depend on the command (field name -> value); ``click_kw``: per field, what only click knows."""
    made: list[Decorator] = []
    for cls in sources:
        for f in fields(cls):
            if spec_of(f) is None or f.name in skip or (only is not None and f.name not in only):
                continue
            made.append(field_option(cls, f, defaults, **(click_kw or {}).get(f.name, {})))
    return stack(*made)


def stack(*decorators: Decorator) -> Decorator:
    """Several option decorators as one; the first is listed first in ``--help``."""
    def apply(fn: Callable) -> Callable:
        for d in reversed(decorators):
            fn = d(fn)
        return fn

    return apply
