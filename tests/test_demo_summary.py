"""The demo's last lines (``pncd benchmark``'s table, which the demo prints) and its verdict line, in words."""

from __future__ import annotations

from pncd.apps.benchmark import Planned
from pncd.apps.benchmark_table import merge_reports, render_table, table_rows, verdict_line
from pncd.bench.gate import run_gate

REF = "enet-pncd-torch-fp32"


def _entry(eid, kind, dice, ms, ref=None, precision="fp32", compute="f32", target="openvino"):
    return {"id": eid, "key": eid, "name": eid, "kind": kind, "ref_id": ref, "dice": dice, "voe": 0.5, "rvd": 0.1,
            "latency_ms_median": ms, "precision": precision, "compute_precision": compute, "model": "enet",
            "target": "torch" if kind == "reference" else target, "runtime": "torch" if kind == "reference" else target,
            "backend": "torch" if kind == "reference" else target,
            "dice_rel": None if ref is None else dice / 0.60}  # as bench.accuracy.compare writes it


def _reports(int8_dice: float) -> dict[str, dict]:
    """Each artifact's bench report as pncd benchmark reads it: its torch reference and itself."""
    def report(e):
        return {"schema": "pncd.bench/1", "entries": [_entry(REF, "reference", 0.60, 3.0), e]}
    return {"enet-pncd-openvino-fp32": report(_entry("enet-pncd-openvino-fp32", "artifact", 0.60, 0.5, REF)),
            "enet-pncd-openvino-int8": report(_entry("enet-pncd-openvino-int8", "artifact", int8_dice, 0.4, REF, "int8",
                                                     "int8 (85 of 89 convolutions; f32 elsewhere)"))}


PLANNED = [Planned("enet-pncd-openvino-fp32", "openvino", "fp32"), Planned("enet-pncd-openvino-int8", "openvino", "int8"),
           Planned("enet-pncd-tensorrt-fp32", "tensorrt", "fp32", skip="TensorRT is not installed")]


def _table(int8_dice: float, failures: dict[str, str] | None = None):
    reports = _reports(int8_dice)
    merged = merge_reports(reports)
    ok, rows = run_gate(merged, None)
    planned = PLANNED + [Planned("enet-pncd-openvino-fp16", "openvino", "fp16")] if failures else PLANNED
    table = render_table(table_rows(planned, reports, merged, rows, failures or {}, set())).splitlines()
    return ok, rows, table


def test_pass_table_and_verdict():
    ok, rows, table = _table(0.598)
    assert table[0] == "| artifact | runtime | computes in | median ms | speed-up vs torch | Dice | Dice kept | gate |"
    assert table[2] == "| enet-pncd-torch-fp32 | torch | f32 | 3.00 | 1.00x | 0.6000 | 100.0% | reference |"
    assert "| enet-pncd-openvino-fp32 | openvino | f32 | 0.50 | 6.00x | 0.6000 | 100.0% | PASS |" in table
    assert ("| enet-pncd-openvino-int8 | openvino | int8 (85 of 89 convolutions; f32 elsewhere) | 0.40 | 7.50x | "
            "0.5980 | 99.7% | PASS |") in table
    assert "| enet-pncd-tensorrt-fp32 | – | – | – | – | – | – | skipped: TensorRT is not installed |" in table
    assert ok and verdict_line(ok, rows).startswith("verdict: PASS (2 checks passed")


def test_fail_says_what_failed_in_words():
    ok, rows, table = _table(0.57, failures={"enet-pncd-openvino-fp16": "export failed: agrees on 99.1% of pixels"})
    assert not ok
    assert ("| enet-pncd-openvino-int8 | openvino | int8 (85 of 89 convolutions; f32 elsewhere) | 0.40 | 7.50x | "
            "0.5700 | 95.0% | FAIL |") in table
    assert ("| enet-pncd-openvino-fp16 | – | – | – | – | – | – | FAILED: export failed: agrees on 99.1% of pixels |"
            in table)
    assert verdict_line(ok, rows) == ("verdict: FAIL: enet-pncd-openvino-int8 keeps 95.0% of its torch reference's Dice "
                                      "(needs at least 99%)")
    assert verdict_line(True, rows[:1], {"enet-pncd-openvino-fp16": "export failed: parity"}) == (
        "verdict: FAIL: enet-pncd-openvino-fp16 failed (export failed; see its row)")


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
