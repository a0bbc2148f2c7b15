"""The metric rules of ``pncd gate`` (:mod:`pncd.bench.gate` reads the files and runs them): one row
per entry and rule, ``{"entry", "rule", "value", "limit", "status": pass | fail | skip, "detail"}``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pncd.optspec import cli

DISTANCES = (("hd95", "HD95"), ("assd", "ASSD"))  # report key, name; their unit: the entry's ``hd95_unit``
DISTANCE_FIELDS = ("hd95", "assd", "hd95_unit")


@dataclass(frozen=True)
class Limits:
    """The thresholds of the baseline rules (``pncd gate``'s options of the same names: default,
    help and range written here once, ``metadata=cli(...)``)."""

    max_dice_drop: float = field(default=0.005, metadata=cli(
        "Largest allowed Dice drop below the baseline (absolute).", low=0.0, high=1.0))
    max_voe_increase: float = field(default=0.01, metadata=cli(low=0.0, high=1.0))
    max_rvd_increase: float = field(default=0.05, metadata=cli("Of |RVD|, absolute.", low=0.0))
    max_hd95_increase: float = field(default=1.0, metadata=cli(
        "Largest allowed rise of the mean HD95 over the baseline, in the report's unit (hd95_unit: mm from the data's "
        "NIfTI headers, else pixels at the input size). Distances run between voxel centres, so a boundary that "
        "moves by one voxel moves a case's HD95 by about one: the default allows the mean one voxel (1 px, or 1 mm "
        "at 1 mm spacing) and no more. A baseline without HD95 skips this rule, with a warning. Example: "
        "--max-hd95-increase 2", low=0.0))
    max_assd_increase: float = field(default=0.25, metadata=cli(
        "Largest allowed rise of the mean ASSD over the baseline, in the report's unit. ASSD averages the distance "
        "of every surface voxel, so part of the boundary moving by one voxel moves it by a fraction of one: the "
        "default allows a quarter voxel. Example: --max-assd-increase 0.5", low=0.0))
    max_latency_ratio: float | None = field(default=None, metadata=cli(
        "Median latency / the baseline torch reference's median latency must be at most this.", low=0.0, low_open=True))


def row(entry: str, rule: str, value: float | None, limit: str, ok: bool | None, detail: str = "") -> dict[str, Any]:
    return {"entry": entry, "rule": rule, "value": value, "limit": limit,
            "status": "skip" if ok is None else ("pass" if ok else "fail"), "detail": detail}


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def min_dice_row(e: dict[str, Any], min_dice: float) -> dict[str, Any]:
    """``min_dice``: the entry's Dice (artifact or torch reference) at least the absolute floor."""
    ok = e["dice"] >= min_dice
    detail = "" if ok else f"Dice {e['dice']:.4f} is below the floor {min_dice:g}: the model segments too little"
    return row(e["key"], "min_dice", e["dice"], f">= {min_dice:g}", ok, detail)


def baseline_rows(name: str, e: dict[str, Any], b: dict[str, Any], base: dict[str, Any], limits: Limits,
                  absent: set[str]) -> list[dict[str, Any]]:
    """The rows of one report entry against its baseline entry. ``absent`` collects the side
    ("baseline", "report") that records no surface distances at all (written by an older pncd):
    those rules are skipped with one note (:func:`distance_notes`), not failed."""
    rows = []
    if e.get("dice") is not None:
        drop = b["dice"] - e["dice"]
        rows.append(row(name, "dice_drop", drop, f"<= {limits.max_dice_drop:g}", drop <= limits.max_dice_drop,
                        f"Dice {e['dice']:.4f} vs baseline {b['dice']:.4f}"))
    if e.get("voe") is not None and b.get("voe") is not None:
        inc = e["voe"] - b["voe"]
        rows.append(row(name, "voe_increase", inc, f"<= {limits.max_voe_increase:g}", inc <= limits.max_voe_increase))
    if e.get("rvd") is not None and b.get("rvd") is not None:
        inc = abs(e["rvd"]) - abs(b["rvd"])
        rows.append(row(name, "rvd_increase", inc, f"<= {limits.max_rvd_increase:g}", inc <= limits.max_rvd_increase,
                        "increase of |RVD|"))
    rows.extend(_distance_rows(name, e, b, limits, absent))
    if limits.max_latency_ratio is not None and e.get("kind") == "artifact":
        rows.append(_latency_row(name, e, b, base, limits.max_latency_ratio))
    return rows


def _distance_rows(name: str, e: dict[str, Any], b: dict[str, Any], limits: Limits,
                   absent: set[str]) -> list[dict[str, Any]]:
    """``hd95_increase`` and ``assd_increase``: report − baseline mean, in the report's unit."""
    rows = []
    for key, label in DISTANCES:
        limit = getattr(limits, f"max_{key}_increase")
        if key not in b or key not in e:
            absent.add("baseline" if key not in b else "report")
            continue
        unit, base_unit = e.get("hd95_unit"), b.get("hd95_unit")
        shown = f"<= {limit:g} {unit or ''}".rstrip()
        if unit != base_unit:
            rows.append(row(name, f"{key}_increase", None, shown, None, f"{label} in {unit}, the baseline's in "
                            f"{base_unit}: not comparable; rewrite the baseline with --update-baseline"))
        elif e[key] is None or b[key] is None:
            side = "report" if e[key] is None else "baseline"
            rows.append(row(name, f"{key}_increase", None, shown, None,
                            f"{label} undefined in the {side}: every case has exactly one empty mask"))
        else:
            inc = e[key] - b[key]
            rows.append(row(name, f"{key}_increase", inc, shown, inc <= limit,
                            f"{label} {e[key]:.2f} vs baseline {b[key]:.2f} {unit}"))
    return rows


def _latency_row(name: str, e: dict[str, Any], b: dict[str, Any], base: dict[str, Any],
                 max_latency_ratio: float) -> dict[str, Any]:
    ref_key = b.get("ref_key")
    rb = base["entries"].get(ref_key) if ref_key else None
    if rb is None or not rb.get("latency_ms_median") or e.get("latency_ms_median") is None:
        return row(name, "latency_ratio", None, f"<= {max_latency_ratio:g}", None, "no baseline torch reference latency")
    ratio = e["latency_ms_median"] / rb["latency_ms_median"]
    return row(name, "latency_ratio", ratio, f"<= {max_latency_ratio:g}", ratio <= max_latency_ratio,
               f"{e['latency_ms_median']:.3f} ms vs baseline reference {rb['latency_ms_median']:.3f} ms")


def distance_notes(absent: set[str], where: str) -> list[str]:
    """One note per side that records no HD95/ASSD (``where``: how to name the baseline)."""
    out = []
    if "baseline" in absent:
        out.append(f"{where} records no HD95/ASSD (written by an older pncd): hd95_increase and assd_increase are "
                   "skipped; rewrite it with --update-baseline to gate them")
    if "report" in absent:
        out.append("the report records no HD95/ASSD (benched by an older pncd): hd95_increase and assd_increase are "
                   "skipped; bench again with this pncd to gate them")
    return out
