"""The bench report: ``report.json`` (schema ``pncd.bench/1``), ``report.md``, a plot and overlays.

``report.json`` is flat where it matters: ``entries`` is a list of one flat dict per measured
thing (each artifact and each torch reference) whose keys are scalars, so a gate, a spreadsheet
or ``jq`` reads it without knowing the nesting; per-case scores, runtime settings and raw device
details sit beside it keyed by entry id. Keys of an entry (``None`` where not measured):

    id, key, kind ("artifact" | "reference"), name, ref_id, source_run, artifact_dir, model,
    target, runtime, precision, device, source_checkpoint (the checkpoint it was exported from,
    or the reference loaded), source_check (artifacts: that checkpoint against the SHA-256 its
    manifest recorded: matches, differs with --allow-stale-source, or why it was not checked),
    data_fingerprint (the benched split's identity, :func:`pncd.data.loading.fingerprint`;
    ``data.fingerprint`` holds the first one), where, backend, backend_reason,
    latency_ms_{min,median,mean,p90,p95,p99,max,std}, latency_n, latency_what,
    throughput_ips, batch_size, batch_latency_ms_median,
    batch_throughput_ips, batch_error, first_inference_ms, activation_s, engine_build_s,
    engine_from_cache, mem_rss_peak_growth_mib, mem_rss_delta_mib,
    power_mean_mw, power_source, energy_per_inference_mj, nvpmodel_mode, jetson_clocks,
    n_cases, n_slices, dice, dice_std, voe, voe_std, rvd, rvd_std, n_rvd_undefined,
    n_empty_gt, n_empty_both, dice_lesion_slices,
    hd95, hd95_std, assd, assd_std (means over the cases where defined), n_hd_undefined, hd95_unit
    ("mm" | "px": the unit of HD95 and ASSD, :mod:`pncd.data.spacing`),
    dice_diff, dice_rel, voe_diff, rvd_diff, abs_rvd_diff, worst_case, worst_case_dice_drop,
    n_cases_dice_changed, dice_diff_boot_mean, dice_diff_ci_lo, dice_diff_ci_hi,
    hd95_diff, hd95_diff_ci_lo, hd95_diff_ci_hi, assd_diff, assd_diff_ci_lo, assd_diff_ci_hi,
    pixel_agreement, n_slices_differ, int8 (INT8 artifacts: route, sensitivity, keep_float_auto; else None)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "pncd.bench/1"


@dataclass
class Report:
    """What one bench run measured: the content of ``report.json`` (:meth:`to_json`), and the
    directory it was written to (``path``)."""

    schema: str
    created: str
    pncd_version: str
    artifacts_verified: str  # "sha256 against each manifest (...)" or "skipped (--no-verify)"
    command: str
    options: dict[str, Any]  # the command's options (``pncd bench``: as given, config file included)
    machine: dict[str, Any]
    device_machine: dict[str, Any] | None  # the Jetson's environment (None: everything ran here)
    versions: dict[str, Any]
    data: dict[str, Any]
    entries: list[dict[str, Any]]  # one flat dict per artifact and per torch reference
    per_case: dict[str, list[dict[str, Any]]]  # entry id -> per-case scores
    settings: dict[str, Any]  # entry id -> runtime settings
    files: dict[str, Any]  # the plot and the overlays, relative to ``path``
    profile: dict[str, Any] | None = None  # entry id -> its per-node profile summary (--profile; nodes: profile.json)
    path: Path | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        """report.json's object (every field but ``path``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "path"}


def latency_fields(lat: dict[str, Any] | None) -> dict[str, Any]:
    """Flatten :func:`pncd.bench.latency.summarize` output of the batch-1 and batch loops."""
    out: dict[str, Any] = {}
    b1 = (lat or {}).get("b1") or {}
    e2e = b1.get("end_to_end") or {}
    for k in ("min", "median", "mean", "p90", "p95", "p99", "max", "std"):
        out[f"latency_ms_{k}"] = e2e.get(k)
    out["latency_n"] = e2e.get("n")
    out["throughput_ips"] = b1.get("throughput_ips")
    bt = (lat or {}).get("batch") or {}
    out["batch_size"] = bt.get("batch")
    out["batch_latency_ms_median"] = (bt.get("end_to_end") or {}).get("median")
    out["batch_throughput_ips"] = bt.get("throughput_ips")
    out["batch_error"] = bt.get("error")
    return out


def accuracy_fields(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("n_cases", "n_slices", "dice", "dice_std", "voe", "voe_std", "rvd", "rvd_std", "n_rvd_undefined",
            "n_empty_gt", "n_empty_both", "dice_lesion_slices", "hd95", "hd95_std", "assd", "assd_std",
            "n_hd_undefined", "hd95_unit")
    return {k: summary.get(k) for k in keys}


def compare_fields(cmp: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("dice_diff", "dice_rel", "voe_diff", "rvd_diff", "abs_rvd_diff", "worst_case", "worst_case_dice_drop",
            "n_cases_dice_changed", "dice_diff_boot_mean", "dice_diff_ci_lo", "dice_diff_ci_hi", "pixel_agreement",
            "n_slices_differ", "hd95_diff", "hd95_diff_ci_lo", "hd95_diff_ci_hi", "assd_diff", "assd_diff_ci_lo",
            "assd_diff_ci_hi")
    return {k: (cmp or {}).get(k) for k in keys}


# ---------------------------------------------------------------------------------------------
# report.md
# ---------------------------------------------------------------------------------------------


def _f(v: Any, nd: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


NOTES = (
    "## Notes\n\n"
    "- Latency: warm-up first, then timed iterations; end-to-end includes host-device copies.\n"
    "- img/s (async): OpenVINO's throughput mode (as benchmark_app runs it): the model compiled with "
    "PERFORMANCE_HINT=THROUGHPUT and batch-1 inferences kept in flight on its optimal number of requests.\n"
    "- Memory: whole-process figures — growth of the peak resident set (ru_maxrss; 0 when an earlier stage "
    "peaked higher) over activation and the timed runs; on the device, the runner process's own.\n"
    "- Empty cases: both empty gives Dice 1, VOE 0, RVD 0; empty ground truth with a prediction gives "
    "Dice 0, VOE 1 and an undefined RVD, left out of RVD means and counted above.\n"
    "- HD95 and ASSD (MedPy; 95th percentile and mean of the symmetric surface distances) per case on its "
    "slices stacked as one volume, in mm where the NIfTI headers give the voxel spacing, else in pixels at the "
    "network's input size (slices one pixel apart). Both masks empty gives 0; exactly one empty is undefined "
    "(— here, null in report.json), counted above and left out of the means, never a made-up large value."
)


def accuracy_section(entries: list[dict[str, Any]]) -> str:
    """Dice ± std, VOE, RVD, HD95 ± std and ASSD ± std (unit in the header) and the case counts."""
    unit = _unit(entries)
    return "## Accuracy (per case = per patient volume)\n\n" + _table(
        ["entry", "Dice", "VOE", "RVD", f"HD95{unit}", f"ASSD{unit}", "cases", "slices", "RVD undefined",
         "HD undefined", "empty GT (both empty)"],
        [[e["name"], f"{_f(e['dice'])} ± {_f(e['dice_std'])}", _f(e["voe"]), _f(e["rvd"]),
          _dist(e, "hd95", not unit), _dist(e, "assd", not unit), _f(e["n_cases"]), _f(e["n_slices"]),
          _f(e["n_rvd_undefined"]), _f(e.get("n_hd_undefined")), f"{_f(e['n_empty_gt'])} ({_f(e['n_empty_both'])})"]
         for e in entries])


def _unit(entries: list[dict[str, Any]]) -> str:
    """`` (mm)`` or `` (px)`` for a column header of HD95/ASSD, when every entry has that unit."""
    units = {e.get("hd95_unit") for e in entries} - {None}
    return f" ({units.pop()})" if len(units) == 1 else ""


def _dist(e: dict[str, Any], key: str, with_unit: bool) -> str:
    """A mean surface distance ± its std; — where undefined; ``with_unit``: its unit beside it."""
    v = e.get(key)
    if v is None:
        return "—"
    return f"{v:.2f} ± {_f(e.get(key + '_std'), 2)}" + (f" {e.get('hd95_unit')}" if with_unit else "")


def _dist_diff(e: dict[str, Any], key: str) -> str:
    if e.get(f"{key}_diff") is None:
        return "—"
    return f"{e[key + '_diff']:+.2f} [{_f(e.get(key + '_diff_ci_lo'), 2)}, {_f(e.get(key + '_diff_ci_hi'), 2)}]"


def _async_cell(e: dict[str, Any]) -> str:
    """OpenVINO's throughput mode (batch-1 requests in flight), or – for runtimes without one."""
    ips = e.get("async_throughput_ips")
    return f"{_f(ips, 1)} ({e.get('async_requests')} req)" if ips else "–"


def _batch_cell(e: dict[str, Any]) -> str:
    """Batch throughput, or in words why there is none (the exception text stays in report.json)."""
    if e.get("batch_throughput_ips"):
        return f"{_f(e['batch_throughput_ips'], 1)} (b{e['batch_size']})"
    why = e.get("batch_error") or "not measured"
    return f"– ({why})" if why.startswith("not measured") else "– (the batch run failed; see report.json)"


KEPT_RATIO = 0.99  # the verdict's rule: pncd gate's default --min-ref-ratio (MLPerf's 99% for quantized models)


def verdict(entries: list[dict[str, Any]]) -> str:
    """One line: whether every artifact kept at least :data:`KEPT_RATIO` of its torch reference's
    Dice, which did not, and whether any timing is unstable."""
    arts = [e for e in entries if e["kind"] == "artifact"]
    unstable = [e["name"] for e in entries if e.get("latency_unstable")]
    timing = (f"timing unstable for {', '.join(unstable)} (do not trust their latency or speed-up)" if unstable
              else "timing stable" if any(e.get("latency_cv") is not None for e in entries) else "timing not interleaved")
    if not arts:
        return f"**Verdict: nothing compared** (torch references only); {timing}."
    failing = [e["name"] for e in arts if e.get("dice_rel") is not None and e["dice_rel"] < KEPT_RATIO]
    blind = [e["name"] for e in arts if e.get("dice_rel") is None]  # no reference, or its Dice is 0
    kept = f"{len(arts) - len(failing) - len(blind)} of {len(arts)} artifacts keep at least {KEPT_RATIO:.0%} of their torch reference's Dice"
    fail = f" (below: {', '.join(failing)})" if failing else ""
    blind_note = f"; not comparable (no reference Dice): {', '.join(blind)}" if blind else ""
    word = "FAIL" if failing else "PASS" if not blind else "NOT COMPARED"
    return f"**Verdict: {word}**: {kept}{fail}{blind_note}; {timing}."


def render_markdown(report: dict[str, Any]) -> str:
    entries = report["entries"]
    m = report.get("machine", {})
    d = report.get("data", {})
    parts = [
        f"# pncd bench report\n\n{verdict(entries)}\n\nSchema `{report['schema']}`, written {report['created']} by pncd "
        f"{report.get('pncd_version')}.\n\nCommand: `{report.get('command') or 'pncd.bench.pipeline.run()'}`",
        "## Machine\n\n" + _table(["what", "value"], [[k, _f(v)] for k, v in m.items() if not isinstance(v, (dict, list))]),
        "## Data\n\n" + _table(["what", "value"], [[k, _f(v)] for k, v in d.items() if not isinstance(v, (dict, list))]),
        "## Latency (batch 1, end-to-end: host arrays in and out)\n\n" + _table(
            ["entry", "device", "computes in", "median ms", "mean ± std ms", "p90 ms", "p99 ms", "img/s (b1)",
             "img/s (async)", "img/s (batch)", "first ms", "peak RSS growth MiB"],
            [[e["name"], e["where"] or e["device"], _f(e.get("compute_precision")),
              _f(e["latency_ms_median"], 3) + (" (unstable)" if e.get("latency_unstable") else ""),
              f"{_f(e['latency_ms_mean'], 3)} ± {_f(e['latency_ms_std'], 3)}", _f(e["latency_ms_p90"], 3),
              _f(e["latency_ms_p99"], 3), _f(e["throughput_ips"], 1), _async_cell(e), _batch_cell(e),
              _f(e["first_inference_ms"], 1), _f(e["mem_rss_peak_growth_mib"], 1)] for e in entries],
        ),
        accuracy_section(entries),
    ]
    timed = [e for e in entries if e.get("latency_cv") is not None]
    if timed:
        parts.append(timing_section(timed))
    dev = report.get("device_machine")
    if dev:
        parts.insert(2, "## Device (Jetson runner)\n\n" + _table(["what", "value"], [[k, _f(v)] for k, v in dev.items()]))
    settings = report.get("settings") or {}
    if settings:
        parts.append("## Runtime settings\n\n" + _table(["entry", "settings"], [
            [eid, ", ".join(f"{k}={_f(v)}" for k, v in s.items() if not isinstance(v, (dict, list)))]
            for eid, s in settings.items()]))
    arts = [e for e in entries if e["kind"] == "artifact"]
    if arts:
        parts.append(
            "## Against the torch reference\n\nDice difference = artifact − reference (negative: the artifact "
            "lost Dice); the interval is a paired bootstrap over cases.\n\n" + _table(
                ["artifact", "reference", "ΔDice", "Dice ratio", "95% CI of ΔDice", "worst case (drop)", "ΔVOE",
                 "ΔRVD", f"ΔHD95{_unit(arts)} (95% CI)", f"ΔASSD{_unit(arts)} (95% CI)", "pixel agreement",
                 "slices differing"],
                [[e["name"], e["ref_id"], _f(e["dice_diff"], 5), _f(e["dice_rel"], 5),
                  f"[{_f(e['dice_diff_ci_lo'], 5)}, {_f(e['dice_diff_ci_hi'], 5)}]",
                  f"{_f(e['worst_case'])} ({_f(e['worst_case_dice_drop'], 5)})", _f(e["voe_diff"], 5),
                  _f(e["rvd_diff"], 5), _dist_diff(e, "hd95"), _dist_diff(e, "assd"), _f(e["pixel_agreement"], 6),
                  _f(e["n_slices_differ"])] for e in arts],
            )
        )
    int8 = [e for e in arts if e.get("int8")]
    if int8:
        parts.append(int8_section(int8))
    if report.get("profile"):  # pncd bench --profile
        from pncd.bench.profile import markdown_section
        parts.append(markdown_section(report["profile"]))
    power = [e for e in entries if e.get("power_mean_mw") is not None or e.get("nvpmodel_mode")]
    if power:
        parts.append("## Device power (tegrastats during the timed batch-1 loop)\n\n" + _table(
            ["entry", "mean power mW", "rail", "energy / inference mJ", "nvpmodel", "jetson_clocks"],
            [[e["name"], _f(e["power_mean_mw"], 0), _f(e["power_source"]), _f(e["energy_per_inference_mj"], 3),
              _f(e["nvpmodel_mode"]), _f(e["jetson_clocks"])] for e in power]))
    parts.append(NOTES)
    files = report.get("files", {})
    if files.get("plot"):
        parts.append(f"## Latency versus Dice\n\n![latency versus Dice]({files['plot']})")
    ov = files.get("overlays") or []
    if ov:
        parts.append("## Where artifact and reference disagree most\n\nPanels: image with ground truth (green); "
                     "reference and artifact (ground truth green, prediction yellow, each one's Dice on the slice in "
                     "its title); disagreement (red: reference only, blue: artifact only, gray: both).\n\n"
                     + "\n".join(f"![{Path(p).stem}]({p})" for p in ov))
    elif arts:
        parts.append("## Where artifact and reference disagree most\n\nNo slice differs: every artifact's label "
                     "maps equal its reference's.")
    return "\n\n".join(parts) + "\n"


def _auto_dice(auto: dict[str, Any]) -> str:
    """The chosen candidate's val Dice; the artifact's own where the export rounded it again."""
    again = auto.get("artifact") or {}
    return f"{_f(again.get('dice'))} (re-rounded; search {_f(auto.get('dice'))})" if again else _f(auto.get("dice"))


def int8_section(arts: list[dict[str, Any]], top: int = 3) -> str:
    """Each INT8 artifact's route, what --keep-float auto kept and its most sensitive blocks
    (validation-split Dice, measured by the export), from the manifests."""
    rows = []
    for e in arts:
        q = e["int8"]
        auto = q.get("keep_float_auto") or {}
        kept = (", ".join(auto.get("kept_blocks") or []) or "none beyond the default") if auto else "–"
        sens = q.get("sensitivity") or []
        worst = "; ".join(f"{b['block']} ({_f(b['drop'], 4)})" for b in sens[:top]) if sens else "not measured"
        rows.append([e["name"], _f(q.get("route")), kept,
                     f"{_f(q.get('float_val_dice'))} -> {_auto_dice(auto)}" if auto else "–", worst])
    return ("## INT8: route and sensitivity (from each export's manifest)\n\nSensitivity: the validation Dice "
            f"drop when one block alone is quantized (the {top} largest); kept in float: the blocks "
            "`--keep-float auto` chose.\n\n"
            + _table(["artifact", "route", "kept in float (auto)", "val Dice float -> INT8 (auto)",
                      "most sensitive blocks (drop)"], rows))


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


def timing_section(timed: list[dict[str, Any]]) -> str:
    """The interleaved timing: median, CV, threads, speed-up with its interval, and unstable rows."""
    def speed(e: dict[str, Any]) -> str:
        if e.get("speedup") is None:
            return "1.00x (reference)" if e["kind"] == "reference" else "–"
        lo, hi = e["speedup_ci_lo"], e["speedup_ci_hi"]
        return f"{e['speedup']:.2f}x ({lo:.2f}-{hi:.2f})"

    rows = [[e["name"], _f(e["latency_ms_median"], 3), f"{e['latency_cv']:.1%}", _f(e.get("latency_threads")),
             speed(e), _f(e.get("load_average"), 2),
             "UNSTABLE: " + e["latency_unstable_why"] if e.get("latency_unstable") else "stable"] for e in timed]
    return ("## Timing (interleaved)\n\n" + (timed[0].get("timing") or "") + "; the reference and every artifact "
            "timed in turn, round after round, so all see the same machine load. Speed-up: reference / artifact "
            "median, with a 95% bootstrap interval over rounds. A row is unstable when its coefficient of variation "
            "is above 10% or the load average was above the CPU count: do not trust its latency or speed-up.\n\n"
            + _table(["entry", "median ms", "CV", "threads", "speed-up vs torch (95% CI)", "load avg", "timing"], rows))
