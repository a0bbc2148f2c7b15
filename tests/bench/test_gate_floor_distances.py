"""``pncd gate --min-dice`` (an absolute Dice floor for every entry) and the surface-distance rules
(``hd95_increase``, ``assd_increase``), through the command line on report and baseline files.

The reports are hand-made ``report.json`` files in the bench's schema (the committed checkpoint's
real report is gated in tests/test_pipeline_gate.py); baselines are written by
``pncd gate --update-baseline`` from them."""

from __future__ import annotations

import json
import re

import pytest

from pncd.bench.gate import baseline_from_report, run_gate
from tests.faults.fault_helpers import one_error
from tests.helpers import run_cli

REF, ART = "r-torch-fp32", "r-enet-openvino-int8"


def _entry(key, kind, dice, hd95=3.0, assd=1.0, unit="px", ref=None):
    return {"id": key, "key": key, "kind": kind, "ref_id": ref, "dice": dice, "voe": 0.3, "rvd": 0.05,
            "hd95": hd95, "assd": assd, "hd95_unit": unit, "latency_ms_median": 2.0, "model": "enet",
            "target": "torch" if kind == "reference" else "openvino", "precision": "fp32" if kind == "reference"
            else "int8", "n_cases": 4}


def _report(tmp_path, name="report.json", ref_dice=0.80, art_dice=0.80, **art):
    p = tmp_path / name
    p.write_text(json.dumps({"schema": "pncd.bench/1", "entries": [
        _entry(REF, "reference", ref_dice), _entry(ART, "artifact", art_dice, ref=REF, **art)]}))
    return p


def _baseline(tmp_path, report):
    base = tmp_path / "baseline.json"
    p = run_cli("gate", report, "--baseline", base, "--update-baseline")
    assert p.returncode == 0, p.stderr
    return base


def _rows(stdout, rule):
    """{entry: the result column} of the printed table's rows of ``rule``."""
    out = {}
    for line in stdout.splitlines():
        cells, result = line.split(), re.search(r"\b(PASS|FAIL|SKIP)\b.*$", line)
        if len(cells) >= 5 and cells[1] == rule and result:
            out[cells[0]] = result.group(0)
    return out


def test_min_dice_fails_a_model_that_segments_nothing_and_passes_a_good_one(tmp_path):
    # The torch reference and its INT8 export agree (Dice ratio 1): every relative rule passes on a
    # model that segments almost nothing; the floor does not.
    low = _report(tmp_path, "low.json", ref_dice=0.021, art_dice=0.021)
    p = run_cli("gate", low)
    assert p.returncode == 0 and "gate: PASS" in p.stdout, p.stdout
    p = run_cli("gate", low, "--min-dice", "0.5")
    assert p.returncode == 1 and "gate: FAIL" in p.stdout, p.stdout
    rows = _rows(p.stdout, "min_dice")
    assert set(rows) == {REF, ART}, p.stdout  # each entry, the reference too, named in its own row
    assert all(r.startswith("FAIL") and "0.0210" in r and "0.5" in r for r in rows.values()), rows
    good = _report(tmp_path, "good.json", ref_dice=0.80, art_dice=0.801)
    p = run_cli("gate", good, "--min-dice", "0.5")
    assert p.returncode == 0 and "gate: PASS" in p.stdout, p.stdout
    assert set(_rows(p.stdout, "min_dice").values()) == {"PASS"}
    # only the entry under the floor fails
    ok, rows = run_gate(json.loads(_report(tmp_path, "one.json", ref_dice=0.62, art_dice=0.62).read_text()), None,
                        min_dice=0.7, min_ref_ratio=0.5)
    assert not ok and {r["entry"] for r in rows if r["status"] == "fail"} == {REF, ART}
    ok, rows = run_gate(json.loads(_report(tmp_path, "two.json", ref_dice=0.75, art_dice=0.74).read_text()), None,
                        min_dice=0.745, min_ref_ratio=0.9)
    assert not ok and [r["entry"] for r in rows if r["status"] == "fail"] == [ART]


@pytest.mark.parametrize("bad", ["-0.1", "1.5", "nan"])
def test_min_dice_out_of_range_is_refused(tmp_path, bad):
    line = one_error(run_cli("gate", _report(tmp_path), f"--min-dice={bad}"), 2)
    assert "--min-dice" in line and "range" in line, line


def test_hd95_and_assd_rules_against_the_baseline(tmp_path):
    base = _baseline(tmp_path, _report(tmp_path, "base-report.json"))
    assert json.loads(base.read_text())["entries"][ART]["hd95"] == 3.0
    same = run_cli("gate", _report(tmp_path, "same.json"), "--baseline", base)
    assert same.returncode == 0, same.stdout
    assert _rows(same.stdout, "hd95_increase") == {REF: "PASS  (HD95 3.00 vs baseline 3.00 px)",
                                                   ART: "PASS  (HD95 3.00 vs baseline 3.00 px)"}
    # HD95 up 1.5 px (default limit 1): fails; a wider limit passes it
    worse = _report(tmp_path, "worse.json", hd95=4.5)
    p = run_cli("gate", worse, "--baseline", base)
    assert p.returncode == 1, p.stdout
    assert _rows(p.stdout, "hd95_increase")[ART].startswith("FAIL"), p.stdout
    failed = {ln.split()[1] for ln in p.stdout.splitlines() if " FAIL" in ln and not ln.startswith("gate:")}
    assert failed == {"hd95_increase"}, p.stdout
    assert run_cli("gate", worse, "--baseline", base, "--max-hd95-increase", "2").returncode == 0
    # ASSD up 0.5 px (default limit 0.25): fails; a lower HD95 or ASSD always passes
    p = run_cli("gate", _report(tmp_path, "assd.json", assd=1.5), "--baseline", base)
    assert p.returncode == 1 and _rows(p.stdout, "assd_increase")[ART].startswith("FAIL"), p.stdout
    assert run_cli("gate", _report(tmp_path, "better.json", hd95=1.0, assd=0.2), "--baseline", base).returncode == 0


def test_a_baseline_without_distances_skips_the_rules_with_a_note(tmp_path):
    rep = _report(tmp_path, hd95=40.0, assd=9.0)  # far worse, but nothing to compare it with
    old = baseline_from_report(json.loads(_report(tmp_path, "b.json").read_text()))
    for e in old["entries"].values():
        for k in ("hd95", "assd", "hd95_unit"):
            del e[k]
    base = tmp_path / "old.json"
    base.write_text(json.dumps({**old, "created": "2026-01-01T00:00:00Z"}))
    p = run_cli("gate", rep, "--baseline", base)
    assert p.returncode == 0 and "gate: PASS" in p.stdout, p.stdout + p.stderr
    assert not _rows(p.stdout, "hd95_increase") and not _rows(p.stdout, "assd_increase")
    notes = [ln for ln in p.stderr.splitlines() if "records no HD95/ASSD" in ln]
    assert len(notes) == 1 and str(base) in notes[0] and "--update-baseline" in notes[0], p.stderr


def test_other_units_or_undefined_distances_are_skipped_not_compared(tmp_path):
    base = _baseline(tmp_path, _report(tmp_path, "base-report.json"))
    ok, rows = run_gate(_report(tmp_path, "mm.json", hd95=30.0, unit="mm"), base)
    skipped = [r for r in rows if r["rule"] == "hd95_increase" and r["entry"] == ART]
    assert ok and skipped[0]["status"] == "skip" and "not comparable" in skipped[0]["detail"], rows
    ok, rows = run_gate(_report(tmp_path, "none.json", hd95=None, assd=None), base)
    skipped = [r for r in rows if r["rule"] in ("hd95_increase", "assd_increase") and r["entry"] == ART]
    assert ok and [r["status"] for r in skipped] == ["skip", "skip"], rows
    assert "exactly one empty mask" in skipped[0]["detail"]


def test_a_malformed_distance_is_refused(tmp_path):
    for field, value in (("hd95", "3 px"), ("hd95_unit", "inch")):
        rep = json.loads(_report(tmp_path).read_text())
        rep["entries"][1][field] = value
        path = tmp_path / f"bad-{field}.json"
        path.write_text(json.dumps(rep))
        line = one_error(run_cli("gate", path), 2)
        assert str(path) in line and field in line, line
