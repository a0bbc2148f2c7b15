"""The demo's last lines: a table of the artifacts and one verdict line, in words."""

from __future__ import annotations

import json

from pncd.bench.gate import run_gate
from pncd.apps.demo import summary_table, verdict_line


def _report(tmp_path, int8_dice: float):
    def entry(eid, kind, dice, ms, ref=None, precision="fp32", compute="f32"):
        return {"id": eid, "key": eid, "name": eid, "kind": kind, "ref_id": ref, "dice": dice, "voe": 0.5, "rvd": 0.1,
                "latency_ms_median": ms, "precision": precision, "compute_precision": compute, "model": "enet",
                "target": "torch" if kind == "reference" else "openvino",
                "dice_rel": None if ref is None else dice / 0.60}  # as bench.accuracy.compare writes it
    rep = {"schema": "pncd.bench/1", "entries": [
        entry("enet-torch-fp32", "reference", 0.60, 3.0),
        entry("enet-openvino-fp32", "artifact", 0.60, 0.5, "enet-torch-fp32"),
        entry("enet-openvino-int8", "artifact", int8_dice, 0.4, "enet-torch-fp32", "int8", "f32"),
    ]}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(rep))
    return path


def test_pass_table_and_verdict(tmp_path):
    path = _report(tmp_path, 0.598)
    ok, rows = run_gate(path, None)
    table = summary_table(path, rows).splitlines()
    assert table[0].startswith("| artifact | computes in | median ms | speed-up vs torch | Dice | Dice kept | gate |")
    assert "| enet-openvino-fp32 | f32 | 0.50 | 6.00x | 0.6000 | 100.0% | pass |" in table
    assert "| enet-openvino-int8 | f32 | 0.40 | 7.50x | 0.5980 | 99.7% | pass |" in table
    assert ok and verdict_line(ok, rows).startswith("verdict: PASS (2 checks passed")


def test_fail_says_what_failed_in_words(tmp_path):
    path = _report(tmp_path, 0.57)
    ok, rows = run_gate(path, None)
    assert not ok
    assert "| enet-openvino-int8 | f32 | 0.40 | 7.50x | 0.5700 | 95.0% | FAIL |" in summary_table(path, rows)
    line = verdict_line(ok, rows)
    assert line == ("verdict: FAIL: enet-openvino-int8 keeps 95.0% of its torch reference's Dice "
                    "(needs at least 99%)")
    assert verdict_line(True, rows[:1], {"openvino:fp16": "parity failed"}) == "verdict: FAIL (exports failed: openvino:fp16)"


def test_demo_cases_does_not_go_with_data(tmp_path, capsys):
    """``--cases`` sizes the built-in phantoms; with ``--data`` it would be silently ignored, so it is
    one line and exit 2, before anything is written."""
    import pytest

    from pncd.cli import main

    data = tmp_path / "mine"
    data.mkdir()
    with pytest.raises(SystemExit) as e:
        main(["demo", "--data", str(data), "--cases", "10", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert [ln for ln in err.splitlines() if ln.startswith("Error:")] == [
        "Error: --cases sets the built-in phantoms' size; it does not go with --data"], err
    assert not (tmp_path / "out").exists()
