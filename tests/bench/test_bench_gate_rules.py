"""Gate rules on hand-made reports (the end-to-end gate test with real models is test_bench_e2e.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pncd.bench.gate import GateInputError, baseline_from_report, format_rows, run_gate


def _entry(key, kind, dice, voe=0.2, rvd=0.05, lat=2.0, ref=None):
    return {"id": key, "key": key, "kind": kind, "ref_id": ref, "dice": dice, "voe": voe, "rvd": rvd,
            "latency_ms_median": lat, "model": "enet", "target": "onnxruntime" if kind == "artifact" else "torch",
            "precision": "int8" if kind == "artifact" else "fp32", "n_cases": 5}


def _report(art_dice=0.80, ref_dice=0.80, art_lat=1.0, voe=0.2, rvd=0.05):
    return {"schema": "pncd.bench/1", "machine": {"cpu_model": "x"}, "entries": [
        _entry("run-torch-fp32", "reference", ref_dice, lat=4.0),
        _entry("run-enet-onnxruntime-int8", "artifact", art_dice, voe=voe, rvd=rvd, lat=art_lat, ref="run-torch-fp32"),
    ]}


def _status(rows, entry, rule):
    return next(r["status"] for r in rows if r["entry"] == entry and r["rule"] == rule)


def test_all_rules_pass_on_identical_report():
    rep = _report()
    ok, rows = run_gate(rep, baseline_from_report(rep), max_latency_ratio=0.5)
    assert ok, format_rows(rows)
    assert _status(rows, "run-enet-onnxruntime-int8", "ref_ratio") == "pass"
    assert _status(rows, "run-enet-onnxruntime-int8", "latency_ratio") == "pass"  # 1.0 / 4.0 <= 0.5


@pytest.mark.parametrize(
    "kw, rule",
    [
        (dict(art_dice=0.78), "ref_ratio"),  # 0.78 / 0.80 = 0.975 < 0.99 (the baseline has 0.78 too)
        (dict(art_dice=0.794), "dice_drop"),  # 0.006 below the baseline, ratio still 0.9925
        (dict(voe=0.25), "voe_increase"),
        (dict(rvd=-0.2), "rvd_increase"),  # |RVD| from 0.05 to 0.2
        (dict(art_lat=3.0), "latency_ratio"),  # 3 / 4 > 0.5
    ],
)
def test_each_rule_fails_alone(kw, rule):
    base = baseline_from_report(_report(art_dice=kw["art_dice"]) if rule == "ref_ratio" else _report())
    ok, rows = run_gate(_report(**kw), base, max_latency_ratio=0.5)
    assert not ok
    failed = {(r["entry"], r["rule"]) for r in rows if r["status"] == "fail"}
    assert failed == {("run-enet-onnxruntime-int8", rule)}


def test_thresholds_are_configurable():
    base = baseline_from_report(_report())
    ok, _ = run_gate(_report(art_dice=0.78), base, min_ref_ratio=0.97, max_dice_drop=0.03)
    assert ok


def test_missing_entries_fail_unless_allowed():
    # a baseline entry missing from the report fails by default, with or without --require-all;
    # --allow-missing makes it a skip
    rep = _report()
    base = baseline_from_report(rep)
    base["entries"]["other-enet-openvino-fp16"] = dict(base["entries"]["run-enet-onnxruntime-int8"])
    ok, rows = run_gate(rep, base)
    assert not ok and _status(rows, "other-enet-openvino-fp16", "in_report") == "fail"
    ok, rows = run_gate(rep, base, require_all=True)
    assert not ok and _status(rows, "other-enet-openvino-fp16", "in_report") == "fail"
    ok, rows = run_gate(rep, base, allow_missing=True)
    assert ok and _status(rows, "other-enet-openvino-fp16", "in_report") == "skip"
    with pytest.raises(GateInputError, match="contradict"):
        run_gate(rep, base, allow_missing=True, require_all=True)


def test_report_entries_missing_from_the_baseline_skip_or_fail_with_require_all():
    rep = _report()
    base = baseline_from_report(rep)
    del base["entries"]["run-enet-onnxruntime-int8"]
    ok, rows = run_gate(rep, base)
    assert ok and _status(rows, "run-enet-onnxruntime-int8", "baseline") == "skip"
    ok, rows = run_gate(rep, base, require_all=True)
    assert not ok and _status(rows, "run-enet-onnxruntime-int8", "baseline") == "fail"


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(GateInputError, match="report not found"):
        run_gate(tmp_path / "nope", None)
    (tmp_path / "r.json").write_text("{ not json")
    with pytest.raises(GateInputError, match="not valid JSON"):
        run_gate(tmp_path / "r.json", None)
    (tmp_path / "r.json").write_text(json.dumps({"schema": "something/else", "entries": []}))
    with pytest.raises(GateInputError, match="not a pncd bench report"):
        run_gate(tmp_path / "r.json", None)
    (tmp_path / "r.json").write_text(json.dumps(_report()))
    (tmp_path / "b.json").write_text(json.dumps({"schema": "pncd.baseline/1", "entries": {"x": {"dice": "high"}}}))
    with pytest.raises(GateInputError, match="lacks a numeric 'dice'"):
        run_gate(tmp_path / "r.json", tmp_path / "b.json")


def _gate(*args):
    return subprocess.run([sys.executable, "-m", "pncd.cli", "gate", *map(str, args)], capture_output=True, text=True)


def test_cli_exit_codes(tmp_path):
    rdir = tmp_path / "report"
    rdir.mkdir()
    (rdir / "report.json").write_text(json.dumps(_report()))
    base = tmp_path / "base.json"
    p = _gate(rdir, "--baseline", base, "--update-baseline")
    assert p.returncode == 0 and base.is_file(), p.stderr
    assert json.loads(base.read_text())["schema"] == "pncd.baseline/1"
    p = _gate(rdir, "--baseline", base)
    assert p.returncode == 0 and "gate: PASS" in p.stdout
    (rdir / "report.json").write_text(json.dumps(_report(art_dice=0.70)))
    p = _gate(rdir, "--baseline", base)
    assert p.returncode == 1 and "FAIL" in p.stdout
    p = _gate(tmp_path / "missing", "--baseline", base)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("Error: ")
    (rdir / "report.json").write_text("][")
    p = _gate(rdir, "--baseline", base)
    assert p.returncode == 2 and "not valid JSON" in p.stderr and p.stderr.count("\n") == 1
