"""The gate fails when it compared nothing (unless --allow-empty), names the rows it could
not compare, and treats non-numeric or missing metrics as bad input (exit 2, field named)."""

from __future__ import annotations

import json

import pytest

from tests.faults.fault_helpers import one_error
from tests.helpers import run_cli


def _entry(key, kind, dice=0.8, ref=None, **kw):
    e = {"id": key, "key": key, "kind": kind, "ref_id": ref, "dice": dice, "voe": 0.2, "rvd": 0.05,
         "latency_ms_median": 2.0, "model": "enet", "target": "onnxruntime", "precision": "fp32", "n_cases": 3}
    e.update(kw)
    return e


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def _report(tmp_path, *entries):
    return _write(tmp_path, "report.json", {"schema": "pncd.bench/1", "entries": list(entries)})


def _baseline(tmp_path, entries):
    return _write(tmp_path, "base.json", {"schema": "pncd.baseline/1", "entries": entries})


def _gate(*args):
    return run_cli("gate", *map(str, args))


def test_run_benched_under_another_name_fails_and_names_the_rows(tmp_path):
    rep = _report(tmp_path, _entry("new-torch-fp32", "reference"))
    base = _baseline(tmp_path, {"old-torch-fp32": {"dice": 0.8, "voe": 0.2, "rvd": 0.05}})
    p = _gate(rep, "--baseline", base)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "nothing was compared" in p.stdout and "gate: PASS" not in p.stdout
    assert "new-torch-fp32" in p.stdout.split("not compared:")[1]
    # the baseline's entry missing from the report is a failing row
    assert any(ln.startswith("old-torch-fp32") and "FAIL" in ln and "--allow-missing" in ln for ln in p.stdout.splitlines())
    assert _gate(rep, "--baseline", base, "--allow-empty").returncode == 1
    p = _gate(rep, "--baseline", base, "--allow-missing")
    assert p.returncode == 1 and "old-torch-fp32" in p.stdout.split("not compared:")[1]
    assert _gate(rep, "--baseline", base, "--allow-empty", "--allow-missing").returncode == 0


def test_empty_baseline_fails(tmp_path):
    """A baseline with no entries is refused, one line, even with --allow-empty (see
    test_gate_rules_strict.py)."""
    rep = _report(tmp_path, _entry("r-torch-fp32", "reference"))
    for extra in ([], ["--allow-empty"]):
        line = one_error(_gate(rep, "--baseline", _baseline(tmp_path, {}), *extra), 2)
        assert "no entries" in line and "--update-baseline" in line


def test_artifact_without_reference_and_no_baseline_fails(tmp_path):
    rep = _report(tmp_path, _entry("a-onnxruntime-fp32", "artifact"))
    p = _gate(rep)
    assert p.returncode == 1 and "a-onnxruntime-fp32" in p.stdout and "nothing was compared" in p.stdout


def test_one_compared_row_is_enough(tmp_path):
    rep = _report(tmp_path, _entry("r-torch-fp32", "reference"), _entry("r-ort-fp32", "artifact", ref="r-torch-fp32"))
    p = _gate(rep)
    assert p.returncode == 0 and "gate: PASS" in p.stdout


@pytest.mark.parametrize("field, value, words", [
    ("dice", None, "no 'dice'"),
    ("dice", "0.8", "'dice' is '0.8', not a number"),
    ("voe", "high", "'voe' is 'high', not a number"),
    ("rvd", [1], "'rvd' is [1], not a number"),
    ("latency_ms_median", True, "'latency_ms_median' is True"),
])
def test_non_numeric_or_missing_fields_are_bad_input(tmp_path, field, value, words):
    rep = _report(tmp_path, _entry("r-torch-fp32", "reference", **{field: value}))
    line = one_error(_gate(rep), 2)
    assert words in line and "r-torch-fp32" in line


def test_null_metrics_in_the_report_are_bad_input(tmp_path):
    rep = _report(tmp_path, _entry("r-torch-fp32", "reference", dice=None, voe=None, rvd=None))
    base = _baseline(tmp_path, {"r-torch-fp32": {"dice": 0.8, "voe": 0.2, "rvd": 0.05}})
    line = one_error(_gate(rep, "--baseline", base), 2)
    assert "'dice'" in line


def test_baseline_with_a_string_metric_is_bad_input(tmp_path):
    rep = _report(tmp_path, _entry("r-torch-fp32", "reference"))
    base = _baseline(tmp_path, {"r-torch-fp32": {"dice": 0.8, "voe": "0.2"}})
    line = one_error(_gate(rep, "--baseline", base), 2)
    assert "'voe'" in line and "base.json" in line
