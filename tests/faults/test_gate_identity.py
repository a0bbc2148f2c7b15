"""--update-baseline writes only a new file or over a baseline (never the
report it reads, nor any other file); the gate fails a report of another data set than the
baseline's (moving the data set keeps its identity), a baseline entry missing from the report
(unless --allow-missing), and a report benched with --no-verify (unless --allow-unverified).
An older baseline without a data set identity still gates, with a warning."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.faults.fault_helpers import ok, one_error
from tests.helpers import run_cli

BENCH = ["--iters", "1", "--warmup", "0", "--n-boot", "100", "--overlays", "0", "--batch", "1", "--no-reference"]


@pytest.fixture(scope="module")
def reports(tiny_data, tiny_export, tmp_path_factory):
    """Bench reports of the tiny export: on its data set, on a moved copy of it, on another
    data set of the same shape, and on its data set with --no-verify."""
    d = tmp_path_factory.mktemp("identity")
    moved = d / "moved-data"
    shutil.copytree(tiny_data, moved)
    other = d / "other-data"
    ok(run_cli("data", "synth", other, "--cases", "6", "--slices", "4", "--size", "32", "--seed", "7"))
    out = {}
    for name, extra in {"same": [], "moved": ["--data", moved], "other": ["--data", other],
                        "unverified": ["--no-verify"]}.items():
        out[name] = d / name
        ok(run_cli("bench", tiny_export, "--out", out[name], *BENCH, *extra))
    out["baseline"] = d / "base.json"
    ok(run_cli("gate", out["same"], "--baseline", out["baseline"], "--update-baseline"))
    return out


def _gate(*args):
    return run_cli("gate", *args)


def test_bench_and_baseline_record_the_data_set_identity(reports):
    same = json.loads((reports["same"] / "report.json").read_text())
    fp = same["data"]["fingerprint"]
    assert fp.startswith("sha256:") and len(fp) == 7 + 64
    assert all(e["data_fingerprint"] == fp for e in same["entries"])
    base = json.loads(reports["baseline"].read_text())
    assert base["data"]["fingerprint"] == fp and all(e["data_fingerprint"] == fp for e in base["entries"].values())
    moved = json.loads((reports["moved"] / "report.json").read_text())
    assert moved["data"]["fingerprint"] == fp and moved["data"]["root"] != same["data"]["root"]
    other = json.loads((reports["other"] / "report.json").read_text())
    assert other["data"]["fingerprint"] != fp


def test_a_moved_data_set_passes(reports):
    p = _gate(reports["moved"], "--baseline", reports["baseline"])
    assert p.returncode == 0 and "gate: PASS" in p.stdout, p.stdout + p.stderr
    assert "warning" not in p.stderr


def test_another_data_set_fails(reports):
    p = _gate(reports["other"], "--baseline", reports["baseline"])
    assert p.returncode == 1, p.stdout + p.stderr
    rows = [ln for ln in p.stdout.splitlines() if " data_set " in ln]
    assert rows and all("FAIL" in ln and "data set differs: baseline" in ln for ln in rows), p.stdout
    assert "dice_drop" not in p.stdout  # another data set's Dice is not compared with the baseline's


def test_a_baseline_without_identity_warns_and_still_gates(reports, tmp_path):
    old = json.loads(reports["baseline"].read_text())
    del old["data"]
    for e in old["entries"].values():
        del e["data_fingerprint"]
    base = tmp_path / "old.json"
    base.write_text(json.dumps(old))
    p = _gate(reports["other"], "--baseline", base)
    assert "warning:" in p.stderr and "records no data set identity" in p.stderr and str(base) in p.stderr
    assert " data_set " not in p.stdout  # nothing to compare it with: the metrics decide
    p = _gate(reports["same"], "--baseline", base)
    assert p.returncode == 0 and "records no data set identity" in p.stderr, p.stdout + p.stderr


def test_a_baseline_entry_missing_from_the_report_fails_unless_allowed(reports, tmp_path):
    base = json.loads(reports["baseline"].read_text())
    (key, entry), = base["entries"].items()
    base["entries"]["gone-enet-openvino-int8"] = dict(entry)
    path = tmp_path / "more.json"
    path.write_text(json.dumps(base))
    p = _gate(reports["same"], "--baseline", path)
    assert p.returncode == 1 and "gone-enet-openvino-int8" in p.stdout and "--allow-missing" in p.stdout
    assert any(ln.startswith("gone-enet-openvino-int8") and "FAIL" in ln for ln in p.stdout.splitlines())
    p = _gate(reports["same"], "--baseline", path, "--allow-missing")
    assert p.returncode == 0 and "gone-enet-openvino-int8" in p.stdout.split("not compared:")[1], p.stdout
    assert _gate(reports["same"], "--baseline", path, "--require-all").returncode == 1
    line = one_error(_gate(reports["same"], "--baseline", path, "--require-all", "--allow-missing"), 2)
    assert "contradict" in line


def test_a_no_verify_report_fails_unless_allowed(reports):
    p = _gate(reports["unverified"], "--baseline", reports["baseline"])
    assert p.returncode == 1, p.stdout + p.stderr
    assert "warning:" in p.stderr and "--no-verify" in p.stderr
    assert any(" verified " in ln and "FAIL" in ln for ln in p.stdout.splitlines()), p.stdout
    p = _gate(reports["unverified"], "--baseline", reports["baseline"], "--allow-unverified")
    assert p.returncode == 0 and "gate: PASS" in p.stdout, p.stdout + p.stderr
    assert "warning:" in p.stderr and "--no-verify" in p.stderr  # accepted, not silently


def test_update_baseline_refuses_what_is_not_a_baseline(reports, tmp_path):
    report_json = reports["same"] / "report.json"
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not JSON")
    other_json = tmp_path / "settings.json"
    other_json.write_text('{"schema": "my.settings/1", "x": 1}')
    a_list = tmp_path / "list.json"
    a_list.write_text("[1, 2]")
    before = {p: p.read_bytes() for p in (report_json, notes, other_json, a_list)}
    cases = [(reports["same"], report_json, "is the report being read"),
             (report_json, report_json, "is the report being read"),
             (reports["same"], notes, "not a pncd baseline (not JSON)"),
             (reports["same"], other_json, "not a pncd baseline (schema 'my.settings/1')"),
             (reports["same"], a_list, "not a pncd baseline (not a JSON object)"),
             (reports["same"], reports["unverified"] / "report.json", "not a pncd baseline (schema 'pncd.bench/1')")]
    for report, target, words in cases:
        line = one_error(_gate(report, "--baseline", target, "--update-baseline"), 2)
        assert str(target) in line and words in line, line
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.json", "notes.txt", "settings.json"]
    # a new path and an existing baseline are written (atomically, by pncd.io.write_json)
    new = tmp_path / "new.json"
    ok(_gate(reports["same"], "--baseline", new, "--update-baseline"))
    ok(_gate(reports["moved"], "--baseline", new, "--update-baseline"))
    assert json.loads(new.read_text())["source_report"] == str(reports["moved"])
