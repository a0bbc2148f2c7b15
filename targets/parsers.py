"""Parsers for the text that NVIDIA's device tools print: trtexec, tegrastats, nvpmodel.

They run on the host, on text brought back from the device, so the device-side runner
(:mod:`pncd.targets.jetson_runner`) stays small and only forwards raw lines. Every parser is
tolerant of lines it does not know (other tool versions print more fields) and returns ``None``
for a value it did not find rather than guessing.

Sample outputs these parsers are tested on live in ``tests/fixtures/`` with their sources.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

# ---------------------------------------------------------------------------------------------
# trtexec
# ---------------------------------------------------------------------------------------------

_STAT_KEYS = {
    "min": "min",
    "max": "max",
    "mean": "mean",
    "median": "median",
    "percentile(90%)": "p90",
    "percentile(95%)": "p95",
    "percentile(99%)": "p99",
}
_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_STAT_RE = re.compile(rf"([A-Za-z]+(?:\(\d+(?:\.\d+)?%\))?)\s*=\s*({_NUM})\s*ms")
# "[I] GPU Compute Time: min = ..." -> section "GPU Compute Time"
_SECTION_RE = re.compile(r"^(?:\[[^\]]*\]\s*)*([A-Za-z][A-Za-z0-9 /-]*?):\s*(min\s*=.*)$")


def _section_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def parse_trtexec(text: str) -> dict[str, Any]:
    """Read trtexec's ``=== Performance summary ===`` block (TensorRT 8.4 and later).

    Returns ``{"throughput_qps": float | None, "latency": {...}, "gpu_compute_time": {...},
    ...}`` with one dict per statistics line, keyed by the section name in snake case
    (``latency``, ``gpu_compute_time``, ``h2d_latency``, ``enqueue_time``, ...) and holding
    ``min/max/mean/median/p90/p95/p99`` in milliseconds. Only lines after the summary header are
    read when the header is present, so a build log in front of it does not confuse the parser.
    """
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if "Performance summary" in ln), None)
    if start is not None:
        lines = lines[start + 1 :]
    out: dict[str, Any] = {"throughput_qps": None}
    for line in lines:
        body = re.sub(r"^(?:\[[^\]]*\]\s*)+", "", line.strip())
        m = re.match(rf"Throughput:\s*({_NUM})\s*qps", body)
        if m:
            out["throughput_qps"] = float(m.group(1))
            continue
        m = _SECTION_RE.match(body)
        if not m:
            continue
        stats = {}
        for key, value in _STAT_RE.findall(m.group(2)):
            if key in _STAT_KEYS:
                stats[_STAT_KEYS[key]] = float(value)
        if stats:
            out[_section_key(m.group(1))] = stats
    for key in ("total_host_walltime", "total_gpu_compute_time"):
        m = re.search(rf"{key.replace('_', ' ')}:\s*({_NUM})\s*s", text, flags=re.IGNORECASE)
        if m:
            out[f"{key}_s"] = float(m.group(1))
    return out


def parse_trtexec_times(data: str | list) -> dict[str, list[float]]:
    """Per-iteration times from ``trtexec --exportTimes=FILE.json`` (a list of records).

    Each record carries ``inMs``, ``computeMs``, ``outMs``, ``latencyMs`` and ``endToEndMs``
    (names as in NVIDIA's ``samples/trtexec/tracer.py``); this returns one list per field that is
    present, in milliseconds. Records without a ``latencyMs`` (e.g. a version header) are skipped.
    """
    records = json.loads(data) if isinstance(data, str) else data
    if not isinstance(records, list):
        raise ValueError("trtexec --exportTimes output is not a JSON list")
    fields = ("inMs", "computeMs", "outMs", "latencyMs", "endToEndMs")
    out: dict[str, list[float]] = {f: [] for f in fields}
    for rec in records:
        if not isinstance(rec, dict) or "latencyMs" not in rec:
            continue
        for f in fields:
            if f in rec:
                out[f].append(float(rec[f]))
    return {k: v for k, v in out.items() if v}


# ---------------------------------------------------------------------------------------------
# tegrastats
# ---------------------------------------------------------------------------------------------

_RAM_RE = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP_RE = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU_RE = re.compile(r"\bCPU \[([^\]]*)\]")
_GR3D_RE = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+))?")
_EMC_RE = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_TEMP_RE = re.compile(r"\b([A-Za-z][A-Za-z0-9_-]*)@(-?\d+(?:\.\d+)?)C\b")
# Power rails print "<NAME> <current>mW/<average>mW" (JetPack 5/6); older releases "<NAME> <cur>/<avg>".
_RAIL_RE = re.compile(r"\b((?:VDD|VIN|POM|VDDQ)_[A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?")

#: Rails that carry the whole module's input power, in order of preference.
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")


def parse_tegrastats_line(line: str) -> dict[str, Any] | None:
    """One tegrastats sample -> ``{"ram_used_mb", "ram_total_mb", "cpu_load", "gpu_load",
    "temps", "rails"}``; ``None`` for a line that is not a tegrastats sample.

    ``rails`` maps each power rail to ``{"mw": current, "avg_mw": running average}`` as printed.
    ``cpu_load`` lists each core's load in percent (``None`` for a core that is ``off``).
    """
    ram = _RAM_RE.search(line)
    rails = {m.group(1): {"mw": int(m.group(2)), "avg_mw": int(m.group(3))} for m in _RAIL_RE.finditer(line)}
    if ram is None and not rails:
        return None
    out: dict[str, Any] = {
        "ram_used_mb": int(ram.group(1)) if ram else None,
        "ram_total_mb": int(ram.group(2)) if ram else None,
        "rails": rails,
    }
    swap = _SWAP_RE.search(line)
    if swap:
        out["swap_used_mb"] = int(swap.group(1))
    cpu = _CPU_RE.search(line)
    if cpu:
        loads: list[int | None] = []
        for core in cpu.group(1).split(","):
            m = re.match(r"\s*(\d+)%", core)
            loads.append(int(m.group(1)) if m else None)
        out["cpu_load"] = loads
    gr3d = _GR3D_RE.search(line)
    out["gpu_load"] = int(gr3d.group(1)) if gr3d else None
    if gr3d and gr3d.group(2):
        out["gpu_mhz"] = int(gr3d.group(2))
    emc = _EMC_RE.search(line)
    if emc:
        out["emc_load"] = int(emc.group(1))
    # "cpu@51C" etc.; skip the "N%@F" CPU entries, which end in a digit rather than C.
    out["temps"] = {name: float(v) for name, v in _TEMP_RE.findall(line)}
    return out


def total_power_mw(sample: dict[str, Any]) -> tuple[float | None, str | None]:
    """Module input power of one parsed sample and which rail(s) it came from.

    ``VDD_IN`` (Orin Nano/NX) or ``POM_5V_IN`` (Nano, TX2) when printed; otherwise (AGX Orin
    prints only partial rails such as ``VDD_GPU_SOC``, ``VDD_CPU_CV``, ``VIN_SYS_5V0``) the sum
    of the rails printed, labelled ``"sum:<rails>"`` so a report says what it measured.
    """
    rails = sample.get("rails") or {}
    for name in TOTAL_RAILS:
        if name in rails:
            return float(rails[name]["mw"]), name
    if rails:
        names = sorted(rails)
        return float(sum(rails[n]["mw"] for n in names)), "sum:" + "+".join(names)
    return None, None


def summarize_tegrastats(
    lines: Iterable[str], interval_ms: float | None = None, duration_s: float | None = None, inferences: int | None = None
) -> dict[str, Any]:
    """Mean/peak power over the samples and, with the loop's duration and count, energy.

    ``energy_per_inference_mj = mean power (mW) * duration (s) / inferences``: an average over
    the timed loop, including the board's idle share (tegrastats measures the module input).
    """
    samples = [s for s in (parse_tegrastats_line(ln) for ln in lines) if s is not None]
    powers = [p for p, _ in (total_power_mw(s) for s in samples) if p is not None]
    sources = {src for _, src in (total_power_mw(s) for s in samples) if src}
    out: dict[str, Any] = {
        "n_samples": len(samples),
        "interval_ms": interval_ms,
        "power_source": sorted(sources)[0] if len(sources) == 1 else (sorted(sources) or None),
        "power_mean_mw": sum(powers) / len(powers) if powers else None,
        "power_max_mw": max(powers) if powers else None,
        "gpu_load_mean": None,
        "ram_used_max_mb": None,
        "energy_per_inference_mj": None,
    }
    gpu = [s["gpu_load"] for s in samples if s.get("gpu_load") is not None]
    if gpu:
        out["gpu_load_mean"] = sum(gpu) / len(gpu)
    ram = [s["ram_used_mb"] for s in samples if s.get("ram_used_mb") is not None]
    if ram:
        out["ram_used_max_mb"] = max(ram)
    rails: dict[str, list[int]] = {}
    for s in samples:
        for name, r in s["rails"].items():
            rails.setdefault(name, []).append(r["mw"])
    out["rails_mean_mw"] = {k: sum(v) / len(v) for k, v in sorted(rails.items())}
    if powers and duration_s and inferences:
        out["energy_per_inference_mj"] = out["power_mean_mw"] * duration_s / inferences
    return out


# ---------------------------------------------------------------------------------------------
# nvpmodel / jetson_clocks
# ---------------------------------------------------------------------------------------------


def parse_nvpmodel(text: str) -> dict[str, Any]:
    """``nvpmodel -q`` prints ``NV Power Mode: <NAME>`` and then the mode id on its own line."""
    name = None
    mode_id = None
    for line in text.splitlines():
        m = re.search(r"NV Power Mode:\s*(.+?)\s*$", line)
        if m:
            name = m.group(1)
            continue
        if name is not None and mode_id is None and re.fullmatch(r"\s*\d+\s*", line):
            mode_id = int(line)
    return {"mode": name, "id": mode_id}
