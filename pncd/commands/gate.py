"""``pncd gate``'s command line and its printed table (the rules: :mod:`pncd.bench.gate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pncd.bench.gate import (GateInputError, baseline_from_report, check_baseline_target, compared, format_rows,
                             load_report, run_gate)
from pncd.bench.gate_options import GateOptions
from pncd.bench.gate_rules import Limits
from pncd.commands._options import options
from pncd.errors import PncdError
from pncd.optspec import values_from


def print_rows(rows: list[dict[str, Any]], allow_empty: bool = False, warnings: list[str] | tuple[str, ...] = ()) -> None:
    """The table, the rows not compared, the warnings (on stderr) and the verdict line."""
    click.echo(format_rows(rows))
    n_fail = sum(r["status"] == "fail" for r in rows)
    skipped = [r for r in rows if r["status"] == "skip"]
    if skipped:
        names = ", ".join(dict.fromkeys(f"{r['entry']} ({r['rule']}: {r['detail'] or 'not comparable'})" for r in skipped))
        click.echo(f"not compared: {names}")
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    checked = len(rows) - len(skipped)
    if not compared(rows) and not allow_empty:
        failed = f"{n_fail} failed row{'s' if n_fail > 1 else ''} above, and " if n_fail else ""
        click.echo(f"gate: FAIL ({failed}nothing was compared: no metric row of {len(rows)} passed or failed; check "
                   "that the report and the baseline name the same runs, or pass --allow-empty)")
        return
    click.echo(f"gate: {'FAIL' if n_fail else 'PASS'} ({checked - n_fail} of {checked} compared rows pass, "
               f"{len(skipped)} skipped)")


class _UsageExit(click.ClickException):
    exit_code = 2


@click.command("gate", context_settings={"max_content_width": 100})
@click.argument("report", type=click.Path(path_type=Path))
@options(GateOptions, only=("baseline", "min_ref_ratio"))
@options(Limits, skip=("max_latency_ratio",))
@options(GateOptions, only=("min_dice",))
@options(Limits, only=("max_latency_ratio",))
@options(GateOptions, skip=("baseline", "min_ref_ratio", "min_dice"))
def gate_command(report: Path, baseline: Path | None, update_baseline: bool, allow_empty: bool, **params: Any) -> None:
    """Check a bench REPORT (directory or report.json) against rules and a baseline.

    A report of another data set than the baseline's fails (data_set row); a baseline entry
    missing from the report fails unless --allow-missing; a report benched with --no-verify
    fails unless --allow-unverified, an entry benched with --allow-stale-source unless
    --allow-stale-source. Exit status: 0 when every rule passes, 1 when one fails or when
    nothing could be compared (unless --allow-empty), 2 when the report or the baseline is
    missing, malformed or empty (record one with --update-baseline), or --update-baseline would
    replace a file that is not a baseline.

    Rules: ref_ratio (an artifact against its torch reference), min_dice (with --min-dice, every
    entry), and against the baseline dice_drop, voe_increase, rvd_increase, hd95_increase,
    assd_increase and latency_ratio (with --max-latency-ratio).

    \b
    Examples:
      pncd gate reports/enet --baseline baselines/enet.json
      pncd gate reports/enet --baseline baselines/enet.json --max-latency-ratio 0.5
      pncd gate reports/enet --baseline baselines/enet.json --min-dice 0.5 --max-hd95-increase 2
      pncd gate reports/enet --baseline baselines/enet.json --update-baseline
    """
    warnings: list[str] = []
    try:
        rep = load_report(report)
        if update_baseline:
            if baseline is None:
                raise GateInputError("--update-baseline needs --baseline FILE to write")
            from pncd.io import write_json

            check_baseline_target(baseline, report)
            new = baseline_from_report(rep, str(report))
            write_json(baseline, new)
            click.echo(f"wrote baseline {baseline} ({len(new['entries'])} entries)")
            return
        rules = {**values_from(GateOptions, params), **values_from(Limits, params)}
        ok, rows = run_gate(rep, baseline, allow_empty=allow_empty, warnings=warnings, **rules)
    except PncdError as e:
        raise _UsageExit(str(e)) from None
    print_rows(rows, allow_empty, warnings)
    if not ok:
        raise click.exceptions.Exit(1)
