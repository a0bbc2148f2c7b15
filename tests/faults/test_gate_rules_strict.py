"""The gate refuses what would let it pass by accident: a baseline with no entries (until one
is recorded with --update-baseline), a threshold out of its range (a click range per option,
and the same check in run_gate), and a report whose entries were benched with
--allow-stale-source (a failing ``source`` row and a warning, unless the gate is given
--allow-stale-source too, as --no-verify needs --allow-unverified)."""

from __future__ import annotations

import json

import pytest

from pncd.bench.gate import GateInputError, run_gate
from tests.faults.fault_helpers import one_error
from tests.helpers import run_cli

STALE = "differs from the manifest (sha256 aaaaaaaaaaaa… vs bbbbbbbbbbbb…): benched with --allow-stale-source"


def _entry(key, kind, dice=0.8, ref=None, **kw):
    e = {"id": key, "key": key, "kind": kind, "ref_id": ref, "dice": dice, "voe": 0.2, "rvd": 0.05,
         "latency_ms_median": 2.0, "model": "enet", "target": "onnxruntime", "precision": "fp32", "n_cases": 3}
    e.update(kw)
    return e


def _report(tmp_path, *entries, name="report.json"):
    p = tmp_path / name
    p.write_text(json.dumps({"schema": "pncd.bench/1", "entries": list(entries)}))
    return p


def _pair(source_check="sha256 matches the manifest"):
    return (_entry("r-torch-fp32", "reference"),
            _entry("r-ort-fp32", "artifact", ref="r-torch-fp32", source_check=source_check))


def _gate(*args):
    return run_cli("gate", *map(str, args))


def test_an_empty_baseline_fails_until_one_is_recorded(tmp_path):
    rep = _report(tmp_path, *_pair())
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"schema": "pncd.baseline/1", "entries": {}}))
    for extra in ([], ["--allow-empty"], ["--allow-missing"]):
        line = one_error(_gate(rep, "--baseline", base, *extra), 2)
        assert str(base) in line and "no entries" in line and "--update-baseline" in line, line
    assert run_cli("gate", rep, "--baseline", base, "--update-baseline").returncode == 0
    assert len(json.loads(base.read_text())["entries"]) == 2
    p = _gate(rep, "--baseline", base)
    assert p.returncode == 0 and "gate: PASS" in p.stdout
    with pytest.raises(GateInputError, match="no entries"):
        run_gate(json.loads(rep.read_text()), {"schema": "pncd.baseline/1", "entries": {}})


@pytest.mark.parametrize("option, bad, good", [
    ("--min-ref-ratio", ["-5", "0", "1.51", "nan"], ["0.01", "1.5"]),
    ("--max-dice-drop", ["-0.001", "1.5"], ["0", "1"]),
    ("--max-voe-increase", ["-1", "2"], ["0", "0.5"]),
    ("--max-rvd-increase", ["-0.05"], ["0", "10"]),
    ("--max-latency-ratio", ["0", "-1"], ["0.5", "100"]),
])
def test_thresholds_out_of_range_are_refused(tmp_path, option, bad, good):
    rep = _report(tmp_path, *_pair())
    for v in bad:
        p = _gate(rep, f"{option}={v}")
        assert p.returncode == 2 and "gate: PASS" not in p.stdout, (option, v, p.stdout)
        line = one_error(p, 2)
        assert option in line and "range" in line, line
    for v in good:
        assert _gate(rep, f"{option}={v}").returncode in (0, 1), (option, v)  # accepted (pass or fail on the rule)


def test_run_gate_checks_the_ranges_too(tmp_path):
    rep = json.loads(_report(tmp_path, *_pair()).read_text())
    for kw in ({"min_ref_ratio": -5}, {"min_ref_ratio": 0}, {"max_dice_drop": -0.1}, {"max_voe_increase": 1.1},
               {"max_rvd_increase": float("nan")}, {"max_latency_ratio": 0.0}):
        with pytest.raises(GateInputError, match=next(iter(kw)).replace("_", "-")):
            run_gate(rep, None, **kw)
    ok, _ = run_gate(rep, None, min_ref_ratio=1.5)
    assert not ok  # 0.8 / 0.8 = 1 < 1.5: an in-range threshold that fails


def test_a_report_benched_with_allow_stale_source_fails_unless_allowed(tmp_path):
    rep = _report(tmp_path, *_pair(STALE))
    p = _gate(rep)
    assert p.returncode == 1 and "gate: FAIL" in p.stdout, p.stdout
    rows = [ln for ln in p.stdout.splitlines() if ln.startswith("r-ort-fp32") and " source " in ln]
    assert rows and "FAIL" in rows[0] and "--allow-stale-source" in rows[0]
    assert "warning: r-ort-fp32: benched with --allow-stale-source" in p.stderr
    p = _gate(rep, "--allow-stale-source")
    assert p.returncode == 0 and "gate: PASS" in p.stdout and "--allow-stale-source" in p.stderr
    ok, rows = run_gate(rep, None)
    assert not ok and [r["rule"] for r in rows if r["status"] == "fail"] == ["source"]
    ok, _ = run_gate(rep, None, allow_stale_source=True)
    assert ok
    fresh = _report(tmp_path, *_pair(), name="fresh.json")
    p = _gate(fresh)
    assert p.returncode == 0 and "stale" not in p.stderr
