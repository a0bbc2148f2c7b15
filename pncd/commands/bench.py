"""``pncd bench``: the command line of :func:`pncd.bench.pipeline.run` (it parses and prints).

Its options are generated from :class:`pncd.bench.options.BenchOptions` (:mod:`pncd.commands._options`);
``--gate`` and ``--config`` are the command's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from pncd.bench.options import BenchOptions
from pncd.commands._options import option, options, stack
from pncd.optspec import Cli

GATE = Cli("After the bench, run pncd gate against this baseline (exit 1 if a rule fails).", flag="--gate",
           path="file")


def bench_options(fn: Callable) -> Callable:
    """ARTIFACTS, every CLI field of :class:`BenchOptions`, ``--gate`` and ``--config``."""
    from pncd.commands.config import config_option

    return config_option(stack(click.argument("artifacts", nargs=-1, type=click.Path(path_type=Path)),
                               options(BenchOptions),
                               option("gate_baseline", GATE, None, str, as_path=True))(fn))


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
