"""``pncd benchmark``'s outputs: the merged report, the gate, one table and one verdict line.

Each artifact's bench report (``OUT/reports/NAME/report.json``: the artifact and its own torch
reference) is merged into ``OUT/report.json`` (one reference entry, every artifact's entry; a
bench report that ``pncd gate`` reads), gated with :func:`pncd.bench.gate.run_gate`'s default
rules (and ``--baseline``), and turned into one row per artifact (:func:`entry_row`) beside the
rows of artifacts that failed or were skipped, each with its reason. ``benchmark.md`` and
``benchmark.json`` hold the table; :func:`render_table` prints it (``pncd demo`` prints it too).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

SCHEMA = "pncd.benchmark/1"
HEADER = ("artifact", "runtime", "computes in", "median ms", "speed-up vs torch", "Dice", "Dice kept", "gate")


@dataclass
class BenchmarkResult:
    """What :func:`pncd.apps.benchmark.run_benchmark` returns: the rows, the gate and where it went."""

    out: Path
    rows: list[dict[str, Any]]
    gate_ok: bool
    gate_rows: list[dict[str, Any]]
    failures: dict[str, str]  # artifact name -> one-line reason
    ok: bool  # every planned artifact measured (skipped ones aside) and the gate passed
    table: str
    verdict: str
    doc: dict[str, Any] = field(default_factory=dict)  # benchmark.json


def merge_reports(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One bench report of the per-artifact ones (name -> report.json): the first torch reference
    entry of each id and every artifact entry, their per-case scores and settings; overlays by
    their path under ``OUT``."""
    first = next(iter(reports.values()))
    merged: dict[str, Any] = {**first, "entries": [], "per_case": {}, "settings": {},
                              "files": {"plot": None, "overlays": []}}
    seen: set[str] = set()
    for name, rep in reports.items():
        for e in rep["entries"]:
            if e["id"] in seen:
                continue  # the same torch reference, measured again beside the next artifact
            seen.add(e["id"])
            merged["entries"].append(e)
            merged["per_case"][e["id"]] = (rep.get("per_case") or {}).get(e["id"])
            merged["settings"][e["id"]] = (rep.get("settings") or {}).get(e["id"])
        merged["files"]["overlays"] += [f"reports/{name}/{f}" for f in (rep.get("files") or {}).get("overlays") or []]
    return merged


def gate_status(rows: list[dict[str, Any]], key: str) -> str | None:
    """"FAIL" when a gate row of ``key`` failed, "PASS" when one passed and none failed, else None."""
    mine = [r["status"] for r in rows if r["entry"] == key]
    return "FAIL" if "fail" in mine else "PASS" if "pass" in mine else None


def entry_row(e: dict[str, Any], ref: dict[str, Any] | None, gate: str | None) -> dict[str, Any]:
    """One table row of a report entry (``ref``: its torch reference in the same report)."""
    lat = e.get("latency_ms_median")
    speed = e.get("speedup")
    if speed is None and ref is not None and lat and ref.get("latency_ms_median"):
        speed = ref["latency_ms_median"] / lat  # not interleaved: the ratio of the two medians
    reference = e.get("kind") == "reference"
    runtime = str(e.get("backend") or e.get("runtime") or e.get("target"))
    if e.get("backend_reason"):  # a TensorRT artifact's ONNX on ONNX Runtime (no NVIDIA GPU here)
        runtime += f" ({'TensorRT' if e.get('runtime') == 'tensorrt' else e.get('runtime')}'s ONNX)"
    return {"name": e["name"], "status": "reference" if reference else "measured", "target": e.get("target"),
            "precision": e.get("precision"), "runtime": runtime,
            "computes_in": e.get("compute_precision") or e.get("precision"), "device": e.get("where") or e.get("device"),
            "latency_ms_median": lat, "latency_unstable": bool(e.get("latency_unstable")),
            "latency_unstable_why": e.get("latency_unstable_why"), "speedup": 1.0 if reference else speed,
            "speedup_ci": [e["speedup_ci_lo"], e["speedup_ci_hi"]] if e.get("speedup_ci_lo") is not None else None, "dice": e.get("dice"), "dice_kept": 1.0 if reference else e.get("dice_rel"),
            "gate": gate, "reason": None}


def table_rows(planned: list[Any], reports: dict[str, dict[str, Any]], merged: dict[str, Any] | None,
               gate_rows: list[dict[str, Any]], failures: dict[str, str], reused: set[str]) -> list[dict[str, Any]]:
    """The torch reference, then every planned artifact in order: measured, failed or skipped."""
    rows = []
    ref = next((e for e in (merged or {}).get("entries", []) if e.get("kind") == "reference"), None)
    if ref is not None:  # timed once beside each artifact: its row shows the median of those timings
        timed = [e for rep in reports.values() for e in rep["entries"] if e["id"] == ref["id"]]
        medians = sorted(e["latency_ms_median"] for e in timed if e.get("latency_ms_median") is not None)
        row = entry_row(ref, None, "FAIL" if gate_status(gate_rows, ref["key"]) == "FAIL" else None)
        row.update(latency_ms_median=statistics.median(medians) if medians else None, timings=len(medians),
                   latency_unstable=any(e.get("latency_unstable") for e in timed), report=None, reused=None)
        rows.append(row)
    for p in planned:
        base = {"name": p.name, "target": p.target, "precision": p.precision}
        if p.skip:
            rows.append({**base, "status": "skipped", "reason": p.skip})
        elif p.name in failures:
            rows.append({**base, "status": "failed", "reason": failures[p.name]})
        else:
            entries = reports[p.name]["entries"]
            e = next(x for x in entries if x.get("kind") == "artifact")
            own_ref = next((x for x in entries if x["id"] == e.get("ref_id")), None)
            rows.append({**entry_row(e, own_ref, gate_status(gate_rows, e["key"])),
                         "reference_latency_ms_median": (own_ref or {}).get("latency_ms_median"),
                         "report": f"reports/{p.name}/report.md", "reused": p.name in reused})
    return rows


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def render_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of :func:`table_rows` (:data:`HEADER`)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    for r in rows:
        if r["status"] in ("skipped", "failed"):
            verdict = f"{'skipped' if r['status'] == 'skipped' else 'FAILED'}: {r['reason']}"
            cells = [r["name"], *("–" * 6), verdict]
        else:
            lat, speed, dice, kept = r["latency_ms_median"], r["speedup"], r["dice"], r["dice_kept"]
            cells = [r["name"], r["runtime"], r["computes_in"],
                     ("–" if lat is None else f"{lat:.2f}") + (" (unstable)" if r["latency_unstable"] else ""),
                     "–" if speed is None else f"{speed:.2f}x", "–" if dice is None else f"{dice:.4f}",
                     "–" if kept is None else f"{kept:.1%}",
                     r["gate"] or ("reference" if r["status"] == "reference" else "–")]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _limit_percent(limit: str) -> str:
    """">= 0.99" -> "99%" (the gate's ratio limits, in words)."""
    try:
        return f"{float(limit.split()[-1]):.0%}"
    except ValueError:
        return limit


WORDS = {"ref_ratio": "keeps {v:.1%} of its torch reference's Dice (needs at least {pct})",
         "dice_drop": "lost {v:.4f} Dice against the baseline (allowed {limit})",
         "voe_increase": "VOE rose by {v:.4f} over the baseline (allowed {limit})",
         "rvd_increase": "|RVD| rose by {v:.4f} over the baseline (allowed {limit})",
         "latency_ratio": "is {v:.2f}x the baseline reference latency (allowed {limit})"}


def verdict_line(ok: bool, rows: list[dict[str, Any]], failures: dict[str, str] | None = None) -> str:
    """One line: PASS, or FAIL with each failed gate rule in words and each artifact that failed."""
    parts = []
    for r in (r for r in rows if r["status"] == "fail"):
        text, v = WORDS.get(r["rule"]), r["value"]
        parts.append(f"{r['entry']} " + (text.format(v=v, limit=r["limit"], pct=_limit_percent(r["limit"]))
                                         if text and v is not None else f"{r['rule']}: {r['detail'] or 'failed'}"))
    parts += [f"{name} failed ({reason.split(':')[0]}; see its row)" for name, reason in (failures or {}).items()]
    if ok and not failures:
        compared = sum(r["status"] == "pass" for r in rows)
        return f"verdict: PASS ({compared} checks passed: every artifact keeps its accuracy)"
    if not parts:
        return "verdict: FAIL (the gate compared nothing: no artifact had a reference or a baseline entry)"
    return "verdict: FAIL: " + "; ".join(parts)


def markdown(doc: dict[str, Any], table: str) -> str:
    """benchmark.md: the verdict, what was measured how, the table, each artifact's report."""
    o = doc["options"]
    reports = [f"- [{r['name']}]({r['report']})" for r in doc["rows"] if r.get("report")]
    return "\n\n".join([
        f"# pncd benchmark: {Path(str(doc['run'])).name}", f"**{doc['verdict']}**",
        f"Run `{doc['run']}`, checkpoint `{doc['checkpoint']}` (SHA-256 `{doc['checkpoint_sha256'][:16]}…`); every "
        f"artifact built from one ONNX export (SHA-256 `{str(doc.get('onnx_sha256'))[:16]}…`). Measured on the "
        f"{o['split']} split. Each artifact is timed in {o['interleave_rounds']} interleaved rounds with its own torch "
        "reference; speed-up = that reference's median / the artifact's median (the torch row: the median of its "
        "timings beside each artifact); \"(unstable)\": its timing varied too much or the machine was busy (do not "
        "trust it). Dice kept = the artifact's Dice / its reference's. "
        "Gate: pncd gate's rules with their defaults" + (f" and the baseline `{o['baseline']}`" if o.get("baseline")
                                                          else "") + ".",
        table, "Each artifact's bench report (latency, accuracy, overlays):\n\n" + "\n".join(reports or ["(none)"]),
    ]) + "\n"


def options_record(o: Any) -> dict[str, Any]:
    """The options as benchmark.json records them (paths as strings)."""
    return {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
            for k, v in asdict(o).items() if k != "progress"}


def finish(o: Any, root: Path, planned: list[Any], report_dirs: dict[str, Path], failures: dict[str, str],
           reused: set[str], ckpt: Path, sha: str, log: Callable[[str], None]) -> BenchmarkResult:
    """Merge, gate, and write ``report.json``, ``benchmark.json`` and ``benchmark.md`` into ``root``."""
    from pncd.bench.gate import run_gate
    from pncd.io import read_json, write_json, write_text
    from pncd.privacy import public

    reports = {name: read_json(d / "report.json") for name, d in report_dirs.items()}
    merged = merge_reports(reports) if reports else None
    gate_ok = False
    gate_rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    if merged is not None:
        gate_ok, gate_rows = run_gate(merged, o.baseline, warnings=warnings)
        for w in warnings:
            log(f"warning: {w}")
        write_json(root / "report.json", merged)
    rows = table_rows(planned, reports, merged, gate_rows, failures, reused)
    table = render_table(rows)
    verdict = (verdict_line(gate_ok, gate_rows, failures) if merged is not None else
               "verdict: FAIL (nothing was measured: " + ("every artifact failed" if failures else "every row was skipped")
               + "; see the rows)")
    onnx = read_json(root / "onnx" / "onnx.json") if (root / "onnx" / "onnx.json").is_file() else {}
    doc = public({"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "run": str(Path(o.run).resolve()), "checkpoint": ckpt.name,
                  "checkpoint_sha256": sha, "onnx_sha256": onnx.get("sha256"), "options": options_record(o),
                  "ok": gate_ok and not failures, "verdict": verdict, "rows": rows, "failures": failures,
                  "gate": {"ok": gate_ok, "rows": gate_rows}}, anonymize=o.anonymize)
    write_json(root / "benchmark.json", doc)
    write_text(root / "benchmark.md", markdown(doc, table))
    return BenchmarkResult(out=root, rows=rows, gate_ok=gate_ok, gate_rows=gate_rows, failures=failures,
                           ok=gate_ok and not failures, table=table, verdict=verdict, doc=doc)
