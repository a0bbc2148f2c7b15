"""``pncd bench``: the command line of :func:`pncd.bench.pipeline.run` (it parses and prints).

Its options are generated from :class:`pncd.bench.options.BenchOptions` (:func:`bench_options`);
``--gate`` and ``--config`` are the command's own.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any, Callable

import click

from pncd.bench.options import BenchOptions, Cli


def click_option(f: Field) -> Callable[[Callable], Callable]:
    """The click option of one :class:`BenchOptions` field, as its ``metadata["cli"]`` says."""
    spec: Cli = f.metadata["cli"]
    flag = spec.flag or "--" + f.name.replace("_", "-")
    decls = [flag, spec.param or f.name]
    kw: dict[str, Any] = {"help": spec.help}
    default = f.default if f.default is not MISSING else None
    if isinstance(default, bool):
        return click.option(*decls, is_flag=True, **kw)  # False unless given (--no-x: True -> False)
    if spec.required:
        kw["required"] = True
    else:
        kw.update(default=default, show_default=default is not None and default != ())
    if spec.multiple:
        kw["multiple"] = True
    elif spec.choices:
        kw["type"] = click.Choice(spec.choices)
    elif spec.path:
        kw["type"] = click.Path(file_okay=spec.path != "dir", path_type=Path)
    elif isinstance(default, float):
        kw["type"] = click.FloatRange(spec.low) if spec.low is not None else float
    elif isinstance(default, int) or spec.low is not None:
        kw["type"] = click.IntRange(int(spec.low)) if spec.low is not None else int
    return click.option(*decls, **kw)


def bench_options(fn: Callable) -> Callable:
    """ARTIFACTS, every CLI field of :class:`BenchOptions`, ``--gate`` and ``--config``."""
    from pncd.commands.config import config_option

    opts: list[Callable[[Callable], Callable]] = [
        click.argument("artifacts", nargs=-1, type=click.Path(path_type=Path)),
        *(click_option(f) for f in fields(BenchOptions) if "cli" in f.metadata),
        click.option("--gate", "gate_baseline", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="After the bench, run pncd gate against this baseline (exit 1 if a rule fails)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return config_option(fn)


@click.command("bench", context_settings={"max_content_width": 100})
@bench_options
@click.pass_context
def bench_command(ctx: click.Context, artifacts: tuple[Path, ...], gate_baseline: Path | None,
                  config: str | None = None, **params: Any) -> None:
    """Latency and accuracy of exported ARTIFACTS against the torch reference of their run.

    \b
    Examples:
      pncd bench exports/enet-ort-fp32 exports/enet-ort-int8 --data DIR --out reports/enet
      pncd bench exports/enet-trt-fp16 --device jetson --host nvidia@orin.local \\
          --ssh-option '-i ~/.ssh/orin' --out reports/orin
      pncd bench exports/enet-ov-int8 --out reports/ov --gate baselines/enet.json
    """
    from pncd.bench.pipeline import run
    from pncd.commands.config import resolved_params

    opts = BenchOptions.from_params(params)
    report = run(artifacts, opts, params=resolved_params(ctx))
    for e in report.entries:
        click.echo(f"{e['name']:<36} {e.get('compute_precision') or '':<12} median "
                   f"{e['latency_ms_median'] or float('nan'):8.3f} ms   "
                   f"Dice {e['dice'] if e['dice'] is not None else float('nan'):.4f}"
                   + (f"   ΔDice {e['dice_diff']:+.5f}" if e.get("dice_diff") is not None else ""))
    click.echo(f"report: {opts.out}/report.md")
    if gate_baseline is not None:
        from pncd.bench.gate import run_gate
        from pncd.commands.gate import print_rows

        # --no-verify on this very command line is the user's choice: the gate warns and goes on
        warnings: list[str] = []
        ok, rows = run_gate(Path(opts.out) / "report.json", gate_baseline, allow_unverified=not opts.verify,
                            allow_stale_source=opts.allow_stale_source, warnings=warnings)
        print_rows(rows, warnings=warnings)
        if not ok:
            ctx.exit(1)
