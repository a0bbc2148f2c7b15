"""``pncd gate``: pass or fail a bench report against accuracy (and latency) rules and a baseline.

Rules, each checked per entry of the report and printed as one row:

- ``ref_ratio`` (artifacts): Dice at least ``--min-ref-ratio`` (default 0.99) times the Dice of
  its own torch reference in the same report — MLPerf's convention for quantized models;
- ``dice_drop``: baseline Dice − report Dice at most ``--max-dice-drop`` (default 0.005);
- ``voe_increase``: report VOE − baseline VOE at most ``--max-voe-increase`` (default 0.01);
- ``rvd_increase``: |RVD| − |baseline RVD| at most ``--max-rvd-increase`` (default 0.05);
- ``latency_ratio`` (with ``--max-latency-ratio``): median batch-1 latency divided by the
  baseline's torch reference median latency, at most the given ratio.

Entries are matched to the baseline by ``key`` (run name, model, target, precision). An entry
missing from the baseline, or a baseline entry missing from the report, is a ``skip`` row (a
failure with ``--require-all``). A gate that compared nothing (every row skipped, e.g. a run
benched under another name or an empty baseline) fails unless ``--allow-empty``; the rows that
could not be compared are named. Exit status: 0 all rules pass, 1 a rule fails or nothing was
compared, 2 the report or the baseline is missing or malformed (a non-numeric or missing
``dice``, a non-numeric ``voe``/``rvd``/latency: the field is named). ``--update-baseline``
writes the baseline from the report.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from pncd.errors import PncdError

BASELINE_SCHEMA = "pncd.baseline/1"
REPORT_SCHEMA = "pncd.bench/1"
BASELINE_FIELDS = ("kind", "model", "target", "precision", "ref_key", "dice", "voe", "rvd", "latency_ms_median",
                   "n_cases")


class GateInputError(PncdError):
    """The report or the baseline cannot be used (exit status 2)."""


def _load(path: str | os.PathLike, what: str) -> dict[str, Any]:
    import json

    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise GateInputError(f"{p}: {what} not found; pass the report directory of pncd bench or its report.json"
                             if what == "report" else f"{p}: {what} not found; create one with --update-baseline")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GateInputError(f"{p}: {what} is not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise GateInputError(f"{p}: {what} is not a JSON object")
    return data


_NUMERIC = ("dice", "voe", "rvd", "latency_ms_median")  # dice must be a number; the others a number or null


def _is_number(v: Any) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_fields(path: str | os.PathLike, what: str, key: str, e: dict[str, Any]) -> None:
    """A report or baseline entry's metrics: ``dice`` a finite number, the others a number or null."""
    for field in _NUMERIC:
        v = e.get(field)
        if field == "dice" and v is None:
            raise GateInputError(f"{path}: {what} entry {key!r} has no 'dice' (missing or null); "
                                 + ("rerun pncd bench" if what == "report" else "rewrite it with --update-baseline"))
        if v is not None and not _is_number(v):
            raise GateInputError(f"{path}: {what} entry {key!r}: '{field}' is {v!r}, not a number")


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    rep = _load(path, "report")
    if rep.get("schema") != REPORT_SCHEMA:
        raise GateInputError(f"{path}: not a pncd bench report (schema {rep.get('schema')!r}, expected {REPORT_SCHEMA!r})")
    entries = rep.get("entries")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) and "key" in e for e in entries):
        raise GateInputError(f"{path}: report has no usable 'entries'; rerun pncd bench")
    for e in entries:
        check_fields(path, "report", e["key"], e)
    return rep


def load_baseline(path: str | os.PathLike) -> dict[str, Any]:
    base = _load(path, "baseline")
    if base.get("schema") != BASELINE_SCHEMA or not isinstance(base.get("entries"), dict):
        raise GateInputError(f"{path}: not a pncd baseline (schema {base.get('schema')!r}, expected "
                             f"{BASELINE_SCHEMA!r} with 'entries'); write one with pncd gate --update-baseline")
    for key, e in base["entries"].items():
        if not isinstance(e, dict) or not _is_number(e.get("dice")):
            raise GateInputError(f"{path}: baseline entry {key!r} lacks a numeric 'dice'")
        check_fields(path, "baseline", key, e)
    return base


def baseline_from_report(report: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    keys = {e["id"]: e["key"] for e in report["entries"]}
    entries = {}
    for e in report["entries"]:
        row = {k: e.get(k) for k in BASELINE_FIELDS if k != "ref_key"}
        row["ref_key"] = keys.get(e.get("ref_id")) if e.get("ref_id") else None
        entries[e["key"]] = row
    return {"schema": BASELINE_SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source_report": source, "machine": (report.get("machine") or {}).get("cpu_model"), "entries": entries}


def _row(entry: str, rule: str, value: float | None, limit: str, ok: bool | None, detail: str = "") -> dict[str, Any]:
    return {"entry": entry, "rule": rule, "value": value, "limit": limit,
            "status": "skip" if ok is None else ("pass" if ok else "fail"), "detail": detail}


def run_gate(
    report: str | os.PathLike | dict[str, Any],
    baseline: str | os.PathLike | dict[str, Any] | None,
    *,
    min_ref_ratio: float = 0.99,
    max_dice_drop: float = 0.005,
    max_voe_increase: float = 0.01,
    max_rvd_increase: float = 0.05,
    max_latency_ratio: float | None = None,
    require_all: bool = False,
    allow_empty: bool = False,
) -> tuple[bool, list[dict[str, Any]]]:
    """Check a report; returns (all passed, rows). Raises :class:`GateInputError` on bad input.

    Passing needs at least one compared row (pass or fail, not skip) unless ``allow_empty``."""
    rep = report if isinstance(report, dict) else load_report(report)
    base = None
    if baseline is not None:
        base = baseline if isinstance(baseline, dict) else load_baseline(baseline)
    by_id = {e["id"]: e for e in rep["entries"]}
    rows: list[dict[str, Any]] = []
    for e in rep["entries"]:
        name = e["key"]
        if e.get("kind") == "artifact":
            ref = by_id.get(e.get("ref_id")) if e.get("ref_id") else None
            if ref is None or ref.get("dice") in (None, 0) or e.get("dice") is None:
                rows.append(_row(name, "ref_ratio", None, f">= {min_ref_ratio:g}", None, "no torch reference in report"))
            else:
                ratio = e["dice"] / ref["dice"]
                rows.append(_row(name, "ref_ratio", ratio, f">= {min_ref_ratio:g}", ratio >= min_ref_ratio,
                                 f"Dice {e['dice']:.4f} vs reference {ref['dice']:.4f}"))
        if base is None:
            continue
        b = base["entries"].get(name)
        if b is None:
            rows.append(_row(name, "baseline", None, "present", False if require_all else None,
                             "not in the baseline; add it with --update-baseline"))
            continue
        if e.get("dice") is not None:
            drop = b["dice"] - e["dice"]
            rows.append(_row(name, "dice_drop", drop, f"<= {max_dice_drop:g}", drop <= max_dice_drop,
                             f"Dice {e['dice']:.4f} vs baseline {b['dice']:.4f}"))
        if e.get("voe") is not None and b.get("voe") is not None:
            inc = e["voe"] - b["voe"]
            rows.append(_row(name, "voe_increase", inc, f"<= {max_voe_increase:g}", inc <= max_voe_increase))
        if e.get("rvd") is not None and b.get("rvd") is not None:
            inc = abs(e["rvd"]) - abs(b["rvd"])
            rows.append(_row(name, "rvd_increase", inc, f"<= {max_rvd_increase:g}", inc <= max_rvd_increase,
                             "increase of |RVD|"))
        if max_latency_ratio is not None and e.get("kind") == "artifact":
            ref_key = b.get("ref_key")
            rb = base["entries"].get(ref_key) if ref_key else None
            if rb is None or not rb.get("latency_ms_median") or e.get("latency_ms_median") is None:
                rows.append(_row(name, "latency_ratio", None, f"<= {max_latency_ratio:g}", None,
                                 "no baseline torch reference latency"))
            else:
                ratio = e["latency_ms_median"] / rb["latency_ms_median"]
                rows.append(_row(name, "latency_ratio", ratio, f"<= {max_latency_ratio:g}", ratio <= max_latency_ratio,
                                 f"{e['latency_ms_median']:.3f} ms vs baseline reference {rb['latency_ms_median']:.3f} ms"))
    if base is not None:
        keys = {e["key"] for e in rep["entries"]}
        for k in base["entries"]:
            if k not in keys:
                rows.append(_row(k, "in_report", None, "present", False if require_all else None,
                                 "in the baseline but not in this report"))
    ok = all(r["status"] != "fail" for r in rows)
    if not allow_empty and not any(r["status"] in ("pass", "fail") for r in rows):
        ok = False  # a gate that compared nothing must not pass by accident
    return ok, rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    head = ("entry", "rule", "value", "limit", "result")
    body = [(r["entry"], r["rule"], "–" if r["value"] is None else f"{r['value']:.5g}", r["limit"],
             r["status"].upper() + (f"  ({r['detail']})" if r["detail"] else "")) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    widths[-1] = 0
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(tuple("-" * max(w, 6) for w in widths)), *(line(b) for b in body)])


def print_rows(rows: list[dict[str, Any]], allow_empty: bool = False) -> None:
    click.echo(format_rows(rows))
    n_fail = sum(r["status"] == "fail" for r in rows)
    skipped = [r for r in rows if r["status"] == "skip"]
    if skipped:
        names = ", ".join(dict.fromkeys(f"{r['entry']} ({r['rule']}: {r['detail'] or 'not comparable'})" for r in skipped))
        click.echo(f"not compared: {names}")
    compared = len(rows) - len(skipped)
    if compared == 0 and not allow_empty:
        click.echo(f"gate: FAIL (nothing was compared: all {len(rows)} rows skipped; check that the report and the "
                   "baseline name the same runs, or pass --allow-empty)")
        return
    click.echo(f"gate: {'FAIL' if n_fail else 'PASS'} ({compared - n_fail} of {compared} compared rows pass, "
               f"{len(skipped)} skipped)")


class _UsageExit(click.ClickException):
    exit_code = 2


@click.command("gate", context_settings={"max_content_width": 100})
@click.argument("report", type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Committed baseline JSON (pncd.baseline/1). Without it only the reference rule is checked.")
@click.option("--min-ref-ratio", type=float, default=0.99, show_default=True,
              help="Artifact Dice / its torch reference Dice must be at least this.")
@click.option("--max-dice-drop", type=float, default=0.005, show_default=True,
              help="Largest allowed Dice drop below the baseline (absolute).")
@click.option("--max-voe-increase", type=float, default=0.01, show_default=True)
@click.option("--max-rvd-increase", type=float, default=0.05, show_default=True, help="Of |RVD|, absolute.")
@click.option("--max-latency-ratio", type=float, default=None,
              help="Median latency / the baseline torch reference's median latency must be at most this.")
@click.option("--require-all", is_flag=True, help="Fail when report and baseline do not hold the same entries.")
@click.option("--allow-empty", is_flag=True, help="Pass even when no row could be compared (every row skipped).")
@click.option("--update-baseline", is_flag=True, help="Write --baseline from REPORT (replacing it) instead of checking.")
def gate_command(report: Path, baseline: Path | None, min_ref_ratio: float, max_dice_drop: float,
                 max_voe_increase: float, max_rvd_increase: float, max_latency_ratio: float | None,
                 require_all: bool, allow_empty: bool, update_baseline: bool) -> None:
    """Check a bench REPORT (directory or report.json) against rules and a baseline.

    Exit status: 0 when every rule passes, 1 when one fails or when nothing could be compared
    (unless --allow-empty), 2 when the report or the baseline is missing or malformed.

    \b
    Examples:
      pncd gate reports/enet --baseline baselines/enet.json
      pncd gate reports/enet --baseline baselines/enet.json --max-latency-ratio 0.5
      pncd gate reports/enet --baseline baselines/enet.json --update-baseline
    """
    try:
        rep = load_report(report)
        if update_baseline:
            if baseline is None:
                raise GateInputError("--update-baseline needs --baseline FILE to write")
            from pncd.io import write_json

            new = baseline_from_report(rep, str(report))
            write_json(baseline, new)
            click.echo(f"wrote baseline {baseline} ({len(new['entries'])} entries)")
            return
        ok, rows = run_gate(rep, baseline, min_ref_ratio=min_ref_ratio, max_dice_drop=max_dice_drop,
                            max_voe_increase=max_voe_increase, max_rvd_increase=max_rvd_increase,
                            max_latency_ratio=max_latency_ratio, require_all=require_all, allow_empty=allow_empty)
    except GateInputError as e:
        raise _UsageExit(str(e)) from None
    print_rows(rows, allow_empty)
    if not ok:
        raise click.exceptions.Exit(1)
