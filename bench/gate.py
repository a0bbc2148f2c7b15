"""``pncd gate``: pass or fail a bench report against accuracy (and latency) rules and a baseline.

Rules, each checked per entry of the report and printed as one row:

- ``ref_ratio`` (artifacts): Dice at least ``--min-ref-ratio`` (default 0.99) times the Dice of
  its own torch reference in the same report — MLPerf's convention for quantized models;
- ``dice_drop``: baseline Dice − report Dice at most ``--max-dice-drop`` (default 0.005);
- ``voe_increase``: report VOE − baseline VOE at most ``--max-voe-increase`` (default 0.01);
- ``rvd_increase``: |RVD| − |baseline RVD| at most ``--max-rvd-increase`` (default 0.05);
- ``hd95_increase``, ``assd_increase``: mean HD95 (ASSD) − the baseline's at most
  ``--max-hd95-increase`` (default 1.0) and ``--max-assd-increase`` (default 0.25), in the unit
  the report records (``hd95_unit``: mm from the data's NIfTI headers, else px). A report and a
  baseline in different units are not compared (a skip row); an undefined mean (every case has
  exactly one empty mask) is a skip row; a baseline (or report) that records no HD95/ASSD at all
  (written by an older pncd) skips both rules with one warning line, not a failure;
- ``min_dice`` (with ``--min-dice``): every entry, artifacts and torch references alike, has a
  Dice of at least this absolute floor (a model that segments nothing passes every relative rule);
- ``latency_ratio`` (with ``--max-latency-ratio``): median batch-1 latency divided by the
  baseline's torch reference median latency, at most the given ratio.

Checks that compare no metric (``PRESENCE_RULES``):

- ``data_set``: an entry's data set identity (its ``data_fingerprint``, a SHA-256 over the
  benched split's file names, sizes and contents: :func:`pncd.data.loading.fingerprint`) must
  equal its baseline entry's. A mismatch is a failing row ("data set differs: baseline X vs
  report Y"; exit 1, like any failed rule) and the entry's metrics are not compared with the
  baseline. A baseline (or report) written by an older pncd records no identity (e.g.
  ``bench/baselines/ci-synthetic.json``): the gate then prints a warning line and goes on.
- ``in_report``: a baseline entry missing from the report fails, unless ``--allow-missing``
  (then a skip). ``baseline``: a report entry missing from the baseline is a skip, a failure
  with ``--require-all`` (which does not affect ``in_report``: that fails by default).
- ``verified``: a report benched with ``--no-verify`` (its artifacts not checked against the
  SHA-256 of their manifests) prints a warning line and fails unless ``--allow-unverified``.
- ``source``: an entry benched with ``--allow-stale-source`` (its artifact exported from other
  weights than its source run now holds) prints a warning line and fails unless the gate is
  given ``--allow-stale-source`` too.

A baseline with no entries is refused (exit 2) until one is recorded with ``--update-baseline``;
each threshold must lie in its range (:data:`THRESHOLDS`, exit 2 otherwise).

Entries are matched to the baseline by ``key`` (run name, model, target, precision). A gate
that compared nothing (no metric row passed or failed, e.g. a run benched under another name)
fails unless ``--allow-empty``; the rows that could not be compared are
named. Exit status: 0 all rules pass, 1 a rule fails or nothing was compared, 2 the report or
the baseline is missing or malformed (a non-numeric or missing ``dice``, a non-numeric
``voe``/``rvd``/latency: the field is named). ``--update-baseline`` writes the baseline from the
report (atomically, with the data set identity); it replaces only a file that is a pncd
baseline, never the report it reads nor any other file (exit 2, nothing written).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pncd.bench.gate_options import GateOptions
from pncd.bench.gate_rules import DISTANCE_FIELDS, Limits, baseline_rows, distance_notes, min_dice_row
from pncd.bench.gate_rules import is_number as _is_number, row as _row
from pncd.errors import PncdError
from pncd.optspec import Range, ranges_of

BASELINE_SCHEMA = "pncd.baseline/1"
REPORT_SCHEMA = "pncd.bench/1"
BASELINE_FIELDS = ("kind", "model", "target", "precision", "ref_key", "dice", "voe", "rvd", "latency_ms_median",
                   "n_cases", "data_fingerprint") + DISTANCE_FIELDS
BASELINE_DATA = ("fingerprint", "root", "split", "n_cases", "n_slices")  # the baseline's ``data``: the report's
PRESENCE_RULES = ("baseline", "in_report", "data_set", "verified", "source")  # rows that compare no metric
# Each threshold's range (declared on its field): pncd gate's click ranges and run_gate's check
THRESHOLDS: dict[str, Range] = {**ranges_of(GateOptions), **ranges_of(Limits)}


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


_NUMERIC = ("dice", "voe", "rvd", "hd95", "assd", "latency_ms_median")  # dice a number; the others a number or null


def check_fields(path: str | os.PathLike, what: str, key: str, e: dict[str, Any]) -> None:
    """A report or baseline entry's metrics: ``dice`` a finite number, the others a number or null."""
    for field in _NUMERIC:
        v = e.get(field)
        if field == "dice" and v is None:
            raise GateInputError(f"{path}: {what} entry {key!r} has no 'dice' (missing or null); "
                                 + ("rerun pncd bench" if what == "report" else "rewrite it with --update-baseline"))
        if v is not None and not _is_number(v):
            raise GateInputError(f"{path}: {what} entry {key!r}: '{field}' is {v!r}, not a number")
    fp = e.get("data_fingerprint")
    if fp is not None and not isinstance(fp, str):
        raise GateInputError(f"{path}: {what} entry {key!r}: 'data_fingerprint' is {fp!r}, not a string")
    unit = e.get("hd95_unit")
    if unit not in (None, "mm", "px"):
        raise GateInputError(f"{path}: {what} entry {key!r}: 'hd95_unit' is {unit!r}, not \"mm\" or \"px\"")


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
    for e in report["entries"]:  # surface distances only where the report has them: absent stays absent
        kept = {k: e.get(k) for k in BASELINE_FIELDS if k != "ref_key" and (k in e or k not in DISTANCE_FIELDS)}
        kept["ref_key"] = keys.get(e.get("ref_id")) if e.get("ref_id") else None
        entries[e["key"]] = kept
    data = _data(report)
    return {"schema": BASELINE_SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source_report": source, "machine": (report.get("machine") or {}).get("cpu_model"),
            "data": {k: data.get(k) for k in BASELINE_DATA}, "entries": entries}


def check_baseline_target(baseline: Path, report: Path) -> None:
    """``--update-baseline`` writes ``baseline`` only where that is absent or a pncd baseline:
    never the report it reads, nor any other file (a GateInputError, nothing written)."""
    import json

    from pncd.io import check_parents

    check_parents(baseline, "--baseline")
    report_file = report / "report.json" if report.is_dir() else report
    if baseline.resolve() == report_file.resolve():
        raise GateInputError(f"--baseline {baseline} is the report being read; --update-baseline would overwrite it: "
                             "choose another --baseline (nothing was changed)")
    if not baseline.exists() and not baseline.is_symlink():
        return
    try:
        data = json.loads(baseline.read_text()) if baseline.is_file() else None
        what = ("not a file" if not baseline.is_file() else "not a JSON object" if not isinstance(data, dict)
                else None if data.get("schema") == BASELINE_SCHEMA else f"schema {data.get('schema')!r}")
    except (OSError, ValueError):
        what = "not JSON"
    if what:
        raise GateInputError(f"--baseline {baseline} is not a pncd baseline ({what}); --update-baseline replaces only "
                             f"a baseline (schema {BASELINE_SCHEMA}): choose a new path or remove the file yourself "
                             "(nothing was changed)")


def run_gate(
    report: str | os.PathLike | dict[str, Any],
    baseline: str | os.PathLike | dict[str, Any] | None,
    *,
    min_ref_ratio: float = GateOptions.min_ref_ratio,
    max_dice_drop: float = Limits.max_dice_drop,
    max_voe_increase: float = Limits.max_voe_increase,
    max_rvd_increase: float = Limits.max_rvd_increase,
    max_hd95_increase: float = Limits.max_hd95_increase,
    max_assd_increase: float = Limits.max_assd_increase,
    min_dice: float | None = GateOptions.min_dice,
    max_latency_ratio: float | None = Limits.max_latency_ratio,
    require_all: bool = GateOptions.require_all,
    allow_empty: bool = GateOptions.allow_empty,
    allow_missing: bool = GateOptions.allow_missing,
    allow_unverified: bool = GateOptions.allow_unverified,
    allow_stale_source: bool = GateOptions.allow_stale_source,
    warnings: list[str] | None = None,
) -> tuple[bool, list[dict[str, Any]]]:
    """Check a report; returns (all passed, rows). Raises :class:`GateInputError` on bad input.

    Passing needs at least one compared metric row (pass or fail, not skip) unless
    ``allow_empty``. ``min_dice``: every entry's absolute Dice floor (None: no floor). A
    baseline entry missing from the report fails unless ``allow_missing``; with
    ``require_all`` a report entry missing from the baseline fails too. ``warnings``: a list the
    gate appends its warning lines to (no data set identity, no HD95/ASSD in the baseline, a
    --no-verify report, an entry benched with --allow-stale-source, which fails unless
    ``allow_stale_source``)."""
    if require_all and allow_missing:
        raise GateInputError("--require-all and --allow-missing contradict each other; pass one of them")
    limits = Limits(max_dice_drop=max_dice_drop, max_voe_increase=max_voe_increase, max_rvd_increase=max_rvd_increase,
                    max_hd95_increase=max_hd95_increase, max_assd_increase=max_assd_increase,
                    max_latency_ratio=max_latency_ratio)
    check_thresholds(min_ref_ratio=min_ref_ratio, min_dice=min_dice, **vars(limits))
    rep = report if isinstance(report, dict) else load_report(report)
    base = _usable_baseline(baseline)
    notes: list[str] = [] if warnings is None else warnings
    by_id = {e["id"]: e for e in rep["entries"]}
    rows: list[dict[str, Any]] = []
    unknown: set[str] = set()  # which side records no data set identity
    no_distances: set[str] = set()  # which side records no HD95/ASSD
    for e in rep["entries"]:
        name = e["key"]
        if min_dice is not None:
            rows.append(min_dice_row(e, min_dice))
        if e.get("kind") == "artifact":
            rows.append(_ref_ratio_row(e, by_id, min_ref_ratio))
        if base is None:
            continue
        b = base["entries"].get(name) or _by_former_name(base, e, notes)
        if b is None:
            rows.append(_row(name, "baseline", None, "present", False if require_all else None,
                             "not in the baseline; add it with --update-baseline"))
            continue
        mismatch = _data_set_row(name, e, rep, b, base, unknown)
        if mismatch is not None:
            rows.append(mismatch)
            continue  # metrics of another data set are not comparable
        rows.extend(baseline_rows(name, e, b, base, limits, no_distances))
    if base is not None:
        from pncd.bench.artifact import former_names

        keys = {k for e in rep["entries"] for k in (e["key"], *former_names(e))}
        for k in base["entries"]:
            if k not in keys:
                rows.append(_row(k, "in_report", None, "present", None if allow_missing else False,
                                 "in the baseline but not in this report" + ("" if allow_missing else
                                                                             "; pass --allow-missing to skip it")))
    notes.extend(_identity_warnings(unknown, baseline))
    notes.extend(distance_notes(no_distances, "the baseline" if isinstance(baseline, dict) else str(baseline)))
    rows.extend(_verified_rows(rep, allow_unverified, notes))
    rows.extend(_stale_rows(rep, allow_stale_source, notes))
    ok = all(r["status"] != "fail" for r in rows)
    if not allow_empty and not compared(rows):
        ok = False  # a gate that compared nothing must not pass by accident
    return ok, rows


def _by_former_name(base: dict[str, Any], e: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    """The baseline entry recorded under a former name of ``e`` (:func:`pncd.bench.artifact.former_names`),
    with a warning line saying which to re-record; None when there is none."""
    from pncd.bench.artifact import former_names

    for old in former_names(e):
        if old in base["entries"]:
            notes.append(f"baseline entry {old!r} is {e['key']!r} under its former name: compared; re-record the "
                         "baseline with --update-baseline to key it by the current name")
            return base["entries"][old]
    return None


def _usable_baseline(baseline: str | os.PathLike | dict[str, Any] | None) -> dict[str, Any] | None:
    """The baseline loaded and checked (None without one); one with no entries is refused."""
    if baseline is None:
        return None
    base = baseline if isinstance(baseline, dict) else load_baseline(baseline)
    if not base["entries"]:
        where = "the baseline" if isinstance(baseline, dict) else str(baseline)
        raise GateInputError(f"{where}: baseline has no entries, so the gate would compare nothing; record one "
                             "from a report with --update-baseline")
    return base


def compared(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that compared a metric (passed or failed; presence checks excluded)."""
    return [r for r in rows if r["status"] in ("pass", "fail") and r["rule"] not in PRESENCE_RULES]


def _ref_ratio_row(e: dict[str, Any], by_id: dict[str, dict[str, Any]], min_ref_ratio: float) -> dict[str, Any]:
    ref = by_id.get(e["ref_id"]) if e.get("ref_id") else None
    if ref is None or ref.get("dice") in (None, 0) or e.get("dice") is None:
        return _row(e["key"], "ref_ratio", None, f">= {min_ref_ratio:g}", None, "no torch reference in report")
    ratio = e["dice"] / ref["dice"]
    return _row(e["key"], "ref_ratio", ratio, f">= {min_ref_ratio:g}", ratio >= min_ref_ratio,
                f"Dice {e['dice']:.4f} vs reference {ref['dice']:.4f}")


def _data(doc: dict[str, Any]) -> dict[str, Any]:
    """A report's or baseline's ``data`` object ({} when it has none)."""
    data = doc.get("data")
    return data if isinstance(data, dict) else {}


def _fingerprint(entry: dict[str, Any], doc: dict[str, Any]) -> str | None:
    """An entry's data set identity, else its document's (``data.fingerprint``); None if neither."""
    fp = entry.get("data_fingerprint") or _data(doc).get("fingerprint")
    return fp if isinstance(fp, str) and fp else None


def _data_set_row(name: str, e: dict[str, Any], rep: dict[str, Any], b: dict[str, Any], base: dict[str, Any],
                  unknown: set[str]) -> dict[str, Any] | None:
    """A failing ``data_set`` row when report and baseline name different data sets, else None
    (``unknown`` collects the side that names none)."""
    have, want = _fingerprint(e, rep), _fingerprint(b, base)
    if have is None or want is None:
        unknown.add("report" if have is None and want is not None else "baseline")
        return None
    if have == want:
        return None
    short = lambda fp: fp.split(":")[-1][:12]  # noqa: E731
    return _row(name, "data_set", None, "same", False, f"data set differs: baseline {short(want)} vs report "
                f"{short(have)}; bench the baseline's data (--data) or rewrite the baseline with --update-baseline")


def _identity_warnings(unknown: set[str], baseline: Any) -> list[str]:
    where = "the baseline" if isinstance(baseline, dict) else f"the baseline {baseline}"
    out = []
    if "baseline" in unknown:
        out.append(f"{where} records no data set identity (written by an older pncd): the gate cannot tell whether "
                   "the report benched the same data; rewrite it with --update-baseline")
    if "report" in unknown:
        out.append("the report records no data set identity (benched by an older pncd): the gate cannot tell whether "
                   "it benched the baseline's data; bench again with this pncd")
    return out


def _verified_rows(rep: dict[str, Any], allow_unverified: bool, notes: list[str]) -> list[dict[str, Any]]:
    """A report benched with --no-verify: a warning, and a failing row unless ``allow_unverified``."""
    verified = rep.get("artifacts_verified")
    if not (isinstance(verified, str) and verified.startswith("skipped")):
        return []
    notes.append("the report was benched with --no-verify: its artifacts were not checked against the SHA-256 of "
                 "their manifests" + ("" if allow_unverified else "; it fails unless --allow-unverified"))
    if allow_unverified:
        return []
    return [_row("(report)", "verified", None, "sha256", False,
                 "benched with --no-verify; bench again without it, or pass --allow-unverified")]


def _stale_rows(rep: dict[str, Any], allow_stale_source: bool, notes: list[str]) -> list[dict[str, Any]]:
    """Entries benched with --allow-stale-source: a warning, and a failing row each unless
    ``allow_stale_source`` (as :func:`_verified_rows` treats --no-verify)."""
    stale = [e["key"] for e in rep["entries"]
             if isinstance(e.get("source_check"), str) and e["source_check"].startswith("differs")]
    if not stale:
        return []
    notes.append(f"{', '.join(stale)}: benched with --allow-stale-source (exported from other weights than its source "
                 "run now holds)" + ("" if allow_stale_source else "; it fails unless --allow-stale-source"))
    if allow_stale_source:
        return []
    return [_row(k, "source", None, "sha256", False, "benched with --allow-stale-source; re-export it and bench "
                 "again, or pass --allow-stale-source") for k in stale]


def check_thresholds(**values: float | None) -> None:
    """Each threshold within its range (:data:`THRESHOLDS`), else a GateInputError naming it."""
    for name, v in values.items():
        r = THRESHOLDS[name]
        if v is None:
            continue
        if not _is_number(v) or not r.admits(v):
            where = f"{'>' if r.low_open else '>='} {r.low:g}" + ("" if r.high is None else f" and <= {r.high:g}")
            raise GateInputError(f"--{name.replace('_', '-')} {v!r} is out of its range: it must be {where}")


def format_rows(rows: list[dict[str, Any]]) -> str:
    head = ("entry", "rule", "value", "limit", "result")
    body = [(r["entry"], r["rule"], "–" if r["value"] is None else f"{r['value']:.5g}", r["limit"],
             r["status"].upper() + (f"  ({r['detail']})" if r["detail"] else "")) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    widths[-1] = 0
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(tuple("-" * max(w, 6) for w in widths)), *(line(b) for b in body)])
