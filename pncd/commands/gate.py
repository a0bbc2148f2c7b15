"""``pncd gate``'s command line and its printed table (the rules: :mod:`pncd.bench.gate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pncd.bench.gate import (THRESHOLDS, GateInputError, baseline_from_report, check_baseline_target, compared,
                             format_rows, load_report, run_gate)
from pncd.errors import PncdError


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


def _range(name: str) -> click.FloatRange:
    """The click range of a threshold option (:data:`pncd.bench.gate.THRESHOLDS`)."""
    lo, hi, lo_open = THRESHOLDS[name]
    return click.FloatRange(min=lo, max=hi, min_open=lo_open)


@click.command("gate", context_settings={"max_content_width": 100})
@click.argument("report", type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Committed baseline JSON (pncd.baseline/1). Without it only the reference rule is checked.")
@click.option("--min-ref-ratio", type=_range("min_ref_ratio"), default=0.99, show_default=True,
              help="Artifact Dice / its torch reference Dice must be at least this.")
@click.option("--max-dice-drop", type=_range("max_dice_drop"), default=0.005, show_default=True,
              help="Largest allowed Dice drop below the baseline (absolute).")
@click.option("--max-voe-increase", type=_range("max_voe_increase"), default=0.01, show_default=True)
@click.option("--max-rvd-increase", type=_range("max_rvd_increase"), default=0.05, show_default=True, help="Of |RVD|, absolute.")
@click.option("--max-latency-ratio", type=_range("max_latency_ratio"), default=None,
              help="Median latency / the baseline torch reference's median latency must be at most this.")
@click.option("--allow-missing", is_flag=True,
              help="Skip baseline entries missing from the report (by default each one fails).")
@click.option("--require-all", is_flag=True,
              help="Also fail on report entries missing from the baseline (by default they are skipped).")
@click.option("--allow-unverified", is_flag=True,
              help="Accept a report benched with --no-verify (by default it fails, with a warning).")
@click.option("--allow-stale-source", is_flag=True,
              help="Accept entries benched with --allow-stale-source (by default each one fails, with a warning).")
@click.option("--allow-empty", is_flag=True, help="Pass even when no row could be compared (every row skipped).")
@click.option("--update-baseline", is_flag=True,
              help="Write --baseline from REPORT instead of checking; replaces only a pncd baseline file.")
def gate_command(report: Path, baseline: Path | None, min_ref_ratio: float, max_dice_drop: float,
                 max_voe_increase: float, max_rvd_increase: float, max_latency_ratio: float | None,
                 allow_missing: bool, require_all: bool, allow_unverified: bool, allow_stale_source: bool,
                 allow_empty: bool, update_baseline: bool) -> None:
    """Check a bench REPORT (directory or report.json) against rules and a baseline.

    A report of another data set than the baseline's fails (data_set row); a baseline entry
    missing from the report fails unless --allow-missing; a report benched with --no-verify
    fails unless --allow-unverified, an entry benched with --allow-stale-source unless
    --allow-stale-source. Exit status: 0 when every rule passes, 1 when one fails or when
    nothing could be compared (unless --allow-empty), 2 when the report or the baseline is
    missing, malformed or empty (record one with --update-baseline), or --update-baseline would
    replace a file that is not a baseline.

    \b
    Examples:
      pncd gate reports/enet --baseline baselines/enet.json
      pncd gate reports/enet --baseline baselines/enet.json --max-latency-ratio 0.5
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
        ok, rows = run_gate(rep, baseline, min_ref_ratio=min_ref_ratio, max_dice_drop=max_dice_drop,
                            max_voe_increase=max_voe_increase, max_rvd_increase=max_rvd_increase,
                            max_latency_ratio=max_latency_ratio, require_all=require_all, allow_empty=allow_empty,
                            allow_missing=allow_missing, allow_unverified=allow_unverified,
                            allow_stale_source=allow_stale_source, warnings=warnings)
    except PncdError as e:
        raise _UsageExit(str(e)) from None
    print_rows(rows, allow_empty, warnings)
    if not ok:
        raise click.exceptions.Exit(1)
