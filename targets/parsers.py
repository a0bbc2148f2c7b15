"""Parsers for the text that NVIDIA's device tools print: tegrastats, nvpmodel.

They run on the host, on text brought back from the device, so the device-side runner
(:mod:`pncd.targets.jetson_runner`) stays small and only forwards raw lines. Every parser is
tolerant of lines it does not know (other tool versions print more fields) and returns ``None``
for a value it did not find rather than guessing.

Sample outputs these parsers are tested on live in ``tests/fixtures/`` with their sources.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

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
