"""How an option appears on the command line: plain data, attached to a dataclass field.

A command's options are the fields of its options dataclasses: a field's default and help text
are written once, in that dataclass, with ``field(default=..., metadata=cli("help", ...))``.
The command line (:func:`pncd.commands._options.options`) generates one click option per field
that has a :class:`Cli`; :func:`values_from` reads click's parsed values back into the fields.
Fields without it are for Python callers only. A numeric option's range (:class:`Range`) is
declared here too, once: the click option shows and enforces it, and :func:`check_ranges` applies
it to options built in Python. A Python-only field that still has a range takes :func:`bounds`.

No click here (this is the foundation layer): the metadata is plain data.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Range:
    """The values a numeric option accepts: ``low``/``high`` (None: unbounded), ``low_open`` /
    ``high_open``: that end itself excluded. ``hint`` ends the refusal."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    hint: str = ""

    def admits(self, v: float) -> bool:
        low_ok = self.low is None or (v > self.low if self.low_open else v >= self.low)
        high_ok = self.high is None or (v < self.high if self.high_open else v <= self.high)
        return low_ok and high_ok

    def text(self) -> str:
        """``>= 1``, ``> 0``, ``<= 4``, ``in [0, 1]``, ``in (0, 1)``."""
        num = lambda x: f"{int(x)}" if float(x).is_integer() else f"{x:g}"  # noqa: E731
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {num(self.low)}" if self.low is not None else "a number"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {num(self.high)}"
        return (f"in {'(' if self.low_open else '['}{num(self.low)}, {num(self.high)}"
                f"{')' if self.high_open else ']'}")


@dataclass(frozen=True)
class Cli:
    """How one field appears on the command line.

    ``help``; ``flag``: the option's name (default ``--field-name``); ``param``: click's
    parameter name, which is also the key in a ``--config`` file and in what a run records
    (default: the field's name); ``default``: the command line's default where it differs from
    the field's (a field required in Python, or None for "inherit"); ``required``.

    Booleans: a flag that sets True (the field's default is False); ``invert``: a ``--no-...``
    flag that sets a True field to False; ``pair``: ``--x/--no-x`` with the default shown.

    Values: ``low``/``high``/``low_open``/``high_open``/``hint``: the range of a number
    (:class:`Range`); ``choices``; ``path``: ``"dir"``, ``"file"`` or ``"any"`` (with
    ``exists``: it must exist; the value is a ``Path`` when the field's annotation starts with
    ``Path``, else a string); ``multiple``: repeatable, collected in a tuple; ``metavar``;
    ``sep``: a tuple field given as one string joined by ``sep`` (``--keep-float first,last``;
    ``none`` or nothing: empty); ``text``: the field holds a value the command parses from the
    string given (``--input-size 256x256``).
    """

    help: str | None = None
    flag: str | None = None
    param: str | None = None
    default: Any = None
    required: bool = False
    invert: bool = False
    pair: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    hint: str = ""
    choices: tuple[str, ...] | None = None
    path: str | None = None
    exists: bool = False
    multiple: bool = False
    metavar: str | None = None
    sep: str | None = None
    text: bool = False

    @property
    def range(self) -> Range | None:
        if self.low is None and self.high is None:
            return None
        return Range(self.low, self.high, self.low_open, self.high_open, self.hint)


def cli(help: str | None = None, **kw: Any) -> dict[str, Cli]:  # noqa: A002 (click's word)
    """A field's metadata: how it appears on the command line (:class:`Cli`)."""
    return {"cli": Cli(help=help, **kw)}


def bounds(low: float | None = None, high: float | None = None, **kw: Any) -> dict[str, Range]:
    """The metadata of a Python-only field that has a range (checked by :func:`check_ranges`)."""
    return {"range": Range(low, high, **kw)}


def spec_of(f: Field) -> Cli | None:
    return f.metadata.get("cli")


def range_of(f: Field) -> Range | None:
    spec = spec_of(f)
    return spec.range if spec is not None else f.metadata.get("range")


def flag_of(f: Field) -> str:
    spec = spec_of(f)
    return (spec.flag if spec is not None and spec.flag else None) or "--" + f.name.replace("_", "-")


def param_of(f: Field) -> str:
    spec = spec_of(f)
    return (spec.param if spec is not None and spec.param else None) or f.name


def kind_of(f: Field) -> type | None:
    """The field's value type: int, float, bool, str, or None (a tuple, a dict, a dataclass).

    Read from the annotation's first alternative (``int | None`` -> int; ``str | Path`` -> str)."""
    first = str(f.type).split("|")[0].strip()
    return {"int": int, "float": float, "bool": bool, "str": str, "Path": str}.get(first)


def field_default(f: Field) -> Any:
    """The field's own default (MISSING when it is required)."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def cli_default(f: Field, overrides: dict[str, Any] | None = None) -> Any:
    """The command line's default of a field: an override, else :attr:`Cli.default`, else the
    field's own (a ``sep`` tuple joined; MISSING: required)."""
    spec = spec_of(f)
    if overrides and f.name in overrides:
        return overrides[f.name]
    if spec is not None and spec.default is not None:
        return spec.default
    v = field_default(f)
    if spec is not None and spec.sep and isinstance(v, (tuple, list)):
        return spec.sep.join(v) or "none"
    return v


def values_from(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``cls`` from click's parsed ``params`` (by :attr:`Cli.param`; an
    inverted flag negated, a ``sep`` string split, a choice of numbers back to its number);
    parameters that are not ``cls``'s fields are ignored."""
    kw: dict[str, Any] = {}
    for f in fields(cls):
        spec, name = spec_of(f), param_of(f)
        if spec is None or name not in params:
            continue
        v = params[name]
        if spec.invert:
            v = not v
        elif spec.sep and isinstance(v, str):
            v = tuple(x.strip() for x in v.split(spec.sep) if x.strip() and x.strip() != "none")
        elif spec.multiple and isinstance(v, list):
            v = tuple(v)
        elif isinstance(v, str) and kind_of(f) is int and spec.choices:
            v = int(v)
        kw[f.name] = v
    return kw


def ranges_of(cls: type) -> dict[str, Range]:
    """Every range declared on ``cls``'s fields, by field name."""
    return {f.name: r for f in fields(cls) if (r := range_of(f)) is not None}


def check_ranges(obj: Any) -> None:
    """PncdError for the first field of ``obj`` outside its declared range (None: not set)."""
    from pncd.errors import PncdError

    for f in fields(obj):
        v, r = getattr(obj, f.name), range_of(f)
        if r is None or v is None:
            continue
        flag = flag_of(f)
        whole = kind_of(f) is int  # an int field takes whole numbers only (size = 32.7)
        if isinstance(v, bool) or not isinstance(v, int if whole else (int, float)):
            raise PncdError(f"{flag} must be {'a whole number' if whole else 'a number'} {r.text()} (got {v!r})")
        if not r.admits(v):
            hint = f"; {r.hint}" if r.hint else ""
            raise PncdError(f"{flag} must be {r.text()} (got {v!r}){hint}")
