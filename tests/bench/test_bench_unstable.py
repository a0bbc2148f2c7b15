"""Timings on a busy machine are flagged, not trusted: a bench run beside a CPU hog (busy
processes, twice as many as the CPUs) marks its rows unstable in the report and warns on the
console; the interleaved figures, the speed-up interval and the load are recorded."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import pytest

from tests.helpers import run_cli


def _spin(seconds: float) -> None:
    end = time.time() + seconds
    x = 0
    while time.time() < end:
        x += 1


@pytest.fixture
def cpu_hog():
    n = 2 * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    procs = [multiprocessing.get_context("fork").Process(target=_spin, args=(600,), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    time.sleep(2)
    yield n
    for p in procs:
        p.kill()
        p.join()


def test_bench_beside_a_cpu_hog_flags_its_rows(ci_gate_exports, cpu_hog, tmp_path):
    art = ci_gate_exports["openvino:fp32"]
    out = tmp_path / "report"
    p = run_cli("bench", art, "--iters", "60", "--interleave-rounds", "6", "--warmup", "2", "--batch", "1",
                "--threads", "1", "--out", out)
    assert p.returncode == 0, p.stderr[-3000:]
    entries = json.loads((out / "report.json").read_text())["entries"]
    assert len(entries) == 2 and all(e["timing"].startswith("interleaved") for e in entries)
    assert all(e["latency_unstable"] for e in entries), [(e["id"], e["latency_cv"], e["load_average"]) for e in entries]
    art_entry = next(e for e in entries if e["kind"] == "artifact")
    lo, hi = art_entry["speedup_ci_lo"], art_entry["speedup_ci_hi"]
    assert lo <= hi and art_entry["speedup"] > 0
    assert "timing unstable" in p.stderr
    assert "UNSTABLE" in (out / "report.md").read_text()
