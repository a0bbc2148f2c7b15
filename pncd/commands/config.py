"""``--config FILE`` for every command: a TOML or YAML file whose keys are option names.

The file only sets defaults (click's ``default_map``); flags given on the command line win.
Keys may be written with dashes or underscores. Unknown keys are an error, so a typo is not
silently ignored, and so is a value of the wrong type (a list for a single value, ``size =
32.7`` for a whole number): click would turn it into something else (32) without a word.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from pncd.commands._options import option, options
from pncd.errors import PncdError
from pncd.optspec import Cli
from pncd.options import RunOptions

CONFIG_FILE = Cli("TOML or YAML file whose keys are this command's option names (flags override it).", path="file")


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PncdError(f"config file {path} not found")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise PncdError(f"config file {path}: use a .toml, .yaml or .yml file")
    except PncdError:
        raise
    except Exception as e:  # parse errors of either format
        raise PncdError(f"config file {path} could not be parsed: {e}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise PncdError(f"config file {path}: expected a table of option names")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _apply_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if not value:
        return value
    data = load_config_file(value)
    # keys are option names (``model`` for ``--model``), mapped to click's parameter names
    names: dict[str, str] = {}
    for p in ctx.command.params:
        if p.name and p.name != "config":
            names[p.name] = p.name
            for opt in getattr(p, "opts", []):
                if opt.startswith("--"):
                    names[opt[2:].replace("-", "_")] = p.name
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise PncdError(f"config file {value}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    params = {p.name: p for p in ctx.command.params if p.name}
    for key, v in data.items():
        expected = _type_error(params[names[key]], v)
        if expected:
            raise PncdError(f"config file {value}: {key} must be {expected}, not {v!r} ({type(v).__name__}); "
                            "fix the file (nothing was changed)")
    ctx.default_map = {**(ctx.default_map or {}), **{names[k]: v for k, v in data.items()}}
    return value


def _type_error(param: click.Parameter, v: Any) -> str | None:
    """What ``param`` expects, when the config file's value ``v`` is not that; None when it is."""
    if getattr(param, "multiple", False) or param.nargs != 1:
        if not isinstance(v, list):
            return "a list"
        return next((f"a list of {e}" for x in v if (e := _scalar_error(param.type, x))), None)
    return _scalar_error(param.type, v)


def _scalar_error(t: click.ParamType, v: Any) -> str | None:
    if isinstance(t, click.types.IntParamType):  # IntRange too
        return None if isinstance(v, int) and not isinstance(v, bool) else "a whole number"
    if isinstance(t, click.types.FloatParamType):
        return None if isinstance(v, (int, float)) and not isinstance(v, bool) else "a number"
    if isinstance(t, click.types.BoolParamType):
        return None if isinstance(v, bool) else "true or false"
    return None if isinstance(v, (str, int, float)) and not isinstance(v, bool) else "a string"


def config_option(fn: Callable) -> Callable:
    """Add ``--config FILE`` to a click command. Put it as the outermost option decorator."""
    return option("config", CONFIG_FILE, None, str, is_eager=True, expose_value=True, callback=_apply_config)(fn)


def resolved_params(ctx: click.Context) -> dict[str, Any]:
    """The command's final option values (config file + flags), JSON-friendly."""
    out = {}
    for k, v in ctx.params.items():
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, tuple):
            v = [str(x) if isinstance(x, Path) else x for x in v]
        out[k] = v
    return out


def _apply_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if ctx.resilient_parsing:
        return value
    from pncd.runtime import apply_threads

    return apply_threads(value)


def threads_option(fn: Callable) -> Callable:
    """``--threads N`` (:attr:`pncd.options.RunOptions.threads`): torch's intra-op threads, applied (and
    printed) as soon as it is parsed."""
    return options(RunOptions, only=("threads",), click_kw={"threads": {"callback": _apply_threads,
                                                                        "expose_value": False}})(fn)
