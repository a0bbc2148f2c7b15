"""Parsers for tegrastats and nvpmodel output, on real sample output (tests/fixtures/jetson)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pncd.targets.parsers import (
    parse_nvpmodel,
    parse_tegrastats_line,
    summarize_tegrastats,
    total_power_mw,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "jetson"


def test_tegrastats_orin_nano_lines():
    lines = (FIX / "tegrastats_orin_nano.txt").read_text().splitlines()
    s = parse_tegrastats_line(lines[0])
    assert s["ram_used_mb"] == 2272 and s["ram_total_mb"] == 7620
    assert s["cpu_load"] == [0, 0, 0, 0, 0, 0]
    assert s["gpu_load"] == 0
    assert s["temps"]["tj"] == pytest.approx(56.656) and s["temps"]["gpu"] == pytest.approx(55.468)
    assert s["rails"]["VDD_IN"] == {"mw": 4673, "avg_mw": 4673}
    assert set(s["rails"]) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    last = parse_tegrastats_line(lines[3])
    assert last["cpu_load"][0] == 100 and last["rails"]["VDD_IN"] == {"mw": 5832, "avg_mw": 5852}
    assert total_power_mw(last) == (5832.0, "VDD_IN")


def test_tegrastats_agx_orin_has_no_vdd_in():
    s = parse_tegrastats_line((FIX / "tegrastats_agx_orin.txt").read_text().strip())
    assert len(s["cpu_load"]) == 12
    power, source = total_power_mw(s)
    assert power == 3193 + 399 + 4306
    assert source == "sum:VDD_CPU_CV+VDD_GPU_SOC+VIN_SYS_5V0"


def test_tegrastats_summary_energy():
    lines = (FIX / "tegrastats_orin_nano.txt").read_text().splitlines()
    mw = [4673, 4673, 5263, 5832]
    out = summarize_tegrastats(["garbage line", *lines], interval_ms=100, duration_s=2.0, inferences=400)
    assert out["n_samples"] == 4
    assert out["power_mean_mw"] == pytest.approx(np.mean(mw))
    assert out["power_max_mw"] == 5832
    assert out["power_source"] == "VDD_IN"
    # mW * s / n = mJ per inference
    assert out["energy_per_inference_mj"] == pytest.approx(np.mean(mw) * 2.0 / 400)
    assert summarize_tegrastats([])["power_mean_mw"] is None


def test_non_tegrastats_line_is_none():
    assert parse_tegrastats_line("tegrastats: command not found") is None


def test_nvpmodel():
    assert parse_nvpmodel((FIX / "nvpmodel_q.txt").read_text()) == {"mode": "15W", "id": 0}
    assert parse_nvpmodel("nvpmodel: command not found") == {"mode": None, "id": None}
