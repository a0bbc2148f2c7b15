"""bench/experiments/reference_grid.py: job order and dependencies, the per-seed summary, and a tiny real grid
(DCSAU-Net teacher, ENet alone, ENet + PNCD on the synthetic phantoms) that resumes."""

from __future__ import annotations

import json

import pytest

from tests.helpers import experiment

grid = experiment("reference_grid")


def test_jobs_order_and_dependencies():
    jobs = grid.jobs(grid.Recipe())
    names = [j.name for j in jobs]
    assert names[0] == "dcsaunet-s0" and len(names) == len(set(names))
    # ENet alone and with PNCD for every seed come right after the teacher, then ENet's deployment
    assert names[1:6] == ["enet-alone-s0", "enet-pncd-s0", "enet-alone-s1", "enet-pncd-s1", "deploy-enet"]
    for j in jobs:
        if j.kind in ("pncd", "ablation"):
            assert j.needs == ["dcsaunet-s0"]
        if j.kind == "deploy":
            assert j.needs == [f"{j.model}-pncd-s0", f"{j.model}-pncd-s1"]
            assert all(names.index(n) < names.index(j.name) for n in j.needs)
    assert {j.modules for j in jobs if j.kind == "ablation"} == {("pmd",), ("rmd",), ("rd",), ("pnscd",)}
    assert sum(j.kind == "alone" for j in jobs) == 6 and sum(j.kind == "pncd" for j in jobs) == 6


def _row(model, kind, seed, dice, modules=()):
    return {"job": f"{model}-{kind}-s{seed}", "kind": kind, "model": model, "seed": seed, "modules": list(modules), "dice": dice,
            "voe": 1 - dice, "rvd": 0.0, "val_dice_best": dice, "parameters": 1000, "torch_ms_b1": 1.0}


def test_summary_pairs_seeds():
    rows = [_row("enet", "alone", 0, 0.50), _row("enet", "alone", 1, 0.40), _row("enet", "pncd", 0, 0.55, grid.SINGLES),
            _row("enet", "pncd", 1, 0.38, grid.SINGLES), _row("enet", "pncd", 2, 0.9, grid.SINGLES)]
    s = grid.summarise(rows)
    d = s["pncd_minus_alone"]["enet"]
    assert d["paired_seeds"] == [0, 1]  # seed 2 has no ENet-alone partner: left out of the difference
    assert d["dice_delta_per_seed"] == pytest.approx([0.05, -0.02])
    assert d["mean"] == pytest.approx(0.015) and d["std"] == pytest.approx(0.0494975, rel=1e-5)
    g = s["groups"]["enet|alone|"]
    assert g["n"] == 2 and g["dice_mean"] == pytest.approx(0.45)
    assert "mobilenetv2" not in s["pncd_minus_alone"]


@pytest.mark.slow
def test_tiny_grid_runs_scores_and_resumes(synthetic_root, tmp_path, capsys):
    work, res = tmp_path / "work", tmp_path / "results"
    args = ["--data", str(synthetic_root), "--work", str(work), "--results", str(res), "--size", "32", "--epochs", "1",
            "--teacher-epochs", "1", "--steps-per-epoch", "2", "--batch", "4", "--seeds", "0",
            "--calib-size", "8", "--bench-iters", "5",
            "--only", "dcsaunet-s0", "--only", "enet-alone-s0", "--only", "enet-pncd-s0", "--only", "deploy-enet"]
    grid.main(args)
    doc = json.loads((res / "grid.json").read_text())
    assert [r["job"] for r in doc["rows"]] == ["dcsaunet-s0", "enet-alone-s0", "enet-pncd-s0", "deploy-enet"]
    assert doc["status"].startswith("partial: 4 of")
    deploy = doc["rows"][-1]
    names = [a["artifact"] for a in deploy["artifacts"]]
    # torch reference + the five exports (a tiny 2-step student may fail an export's parity check: then it is recorded)
    assert len(names) + len(deploy["export_failures"]) == 6 and "enet-pncd-s0-torch-fp32" in names
    for a in deploy["artifacts"]:
        assert a["median_ms_b1"] > 0 and a["speedup_vs_torch"] > 0 and 0.0 <= a["dice"] <= 1.0
    for r in doc["rows"][:3]:
        assert 0.0 <= r["dice"] <= 1.0 and r["n_cases"] == 1 and r["epochs_run"] == 1 and r["torch_ms_b1"] > 0
    cfg = json.loads((work / "runs" / "enet-pncd-s0" / "config.json").read_text())
    assert cfg["distill"]["rmd_variant"] == "emkd" and cfg["distill"]["w_rmd"] == pytest.approx(0.1)
    assert cfg["teacher"]["teacher"].endswith("dcsaunet-s0")
    assert doc["summary"]["pncd_minus_alone"]["enet"]["paired_seeds"] == [0]
    md = (res / "grid.md").read_text()
    assert "| enet |" in md and "not run yet" in md and "### enet" in md
    before = {p: p.stat().st_mtime_ns for p in (work / "rows").iterdir()}
    capsys.readouterr()
    grid.main(args)
    assert capsys.readouterr().out.count("done already") == 4
    assert {p: p.stat().st_mtime_ns for p in (work / "rows").iterdir()} == before


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no such directory"):
        grid.main(["--data", str(tmp_path / "nope"), "--work", str(tmp_path / "w")])
