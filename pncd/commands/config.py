"""``--config FILE`` for every command: a TOML or YAML file whose keys are option names.

The file only sets defaults (click's ``default_map``); flags given on the command line win.
Keys may be written with dashes or underscores. Unknown keys are an error, so a typo is not
silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from pncd.errors import PncdError


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
        raise click.BadParameter(f"unknown key(s) {unknown} in {value}; valid keys: {sorted(names)}", ctx=ctx, param=_param)
    ctx.default_map = {**(ctx.default_map or {}), **{names[k]: v for k, v in data.items()}}
    return value


def config_option(fn: Callable) -> Callable:
    """Add ``--config FILE`` to a click command. Put it as the outermost option decorator."""
    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        is_eager=True,
        expose_value=True,
        callback=_apply_config,
        help="TOML or YAML file whose keys are this command's option names (flags override it).",
    )(fn)


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
    """``--threads N``: torch's intra-op threads, applied (and printed) as soon as it is parsed."""
    return click.option(
        "--threads",
        type=click.IntRange(1),
        default=None,
        callback=_apply_threads,
        expose_value=False,
        help="Torch intra-op threads (default: the physical cores, shared among the processes of a torchrun "
             "job; printed). Use 1 when other jobs share the cores.",
    )(fn)
