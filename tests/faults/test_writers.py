"""Every writer states the kind of output it writes, and its marker records it; pncd data
check --json replaces only an earlier data-check report, never a file of the data set."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from pncd.io import OWNED_MARKER, owned_kind
from tests.faults.fault_helpers import ok, one_error, tree
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
BENCH = ["--iters", "1", "--warmup", "0", "--n-boot", "100", "--overlays", "0", "--batch", "1", "--no-reference"]
WRITERS = ("check_output", "atomic_dir", "check_owned", "claim_dir")  # pncd.io's entries to the one rule


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in WRITERS or name == "write_owned":
                yield name, node


def test_every_writer_passes_its_kind():
    files = [p for top in ("pncd", "export", "bench", "targets") for p in (ROOT / top).rglob("*.py")
             if "experiments" not in p.parts and p.name != "io.py"]
    seen, missing = 0, []
    for path in files:
        for name, call in _calls(path):
            seen += 1
            given = any(k.arg == "kind" for k in call.keywords) or \
                (name == "claim_dir" and len(call.args) >= 2) or (name == "write_owned" and len(call.args) >= 3)
            if not given:
                missing.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}()")
    assert seen >= 10 and missing == []


def test_each_command_records_its_kind(tiny_data, tiny_run, tiny_export, tmp_path):
    assert owned_kind(tiny_data) == "dataset"
    assert owned_kind(tiny_run) == "run"
    assert owned_kind(tiny_export) == "export"
    ok(run_cli("eval", tiny_run, "--out", tmp_path / "ev", "--overlays", "0"))
    assert owned_kind(tmp_path / "ev") == "evaluation"
    ok(run_cli("bench", tiny_export, "--out", tmp_path / "rep", *BENCH))
    assert owned_kind(tmp_path / "rep") == "report"
    marker = json.loads((tmp_path / "rep" / OWNED_MARKER).read_text())
    assert marker["written_by"] == "pncd" and "report.json" in marker["names"]


# -- pncd data check --json ------------------------------------------------------------------------

def test_data_check_json_refuses_a_file_of_the_data_set(tiny_data, copy_of, tmp_path):
    data = copy_of(tiny_data, "data")
    before = tree(data)
    for target in (data / "splits.json", data / "report.json", data / "images" / "r.json"):
        line = one_error(run_cli("data", "check", data, "--json", target), 2)
        assert f"--json {target}" in line and "inside the data set" in line, line
    link = tmp_path / "outside.json"
    link.symlink_to(data / "splits.json")
    line = one_error(run_cli("data", "check", data, "--json", link), 2)
    assert "inside the data set" in line
    assert tree(data) == before


def test_data_check_json_replaces_only_a_data_check_report(tiny_data, tmp_path):
    other = tmp_path / "notes.json"
    other.write_text('{"my": "notes"}')
    line = one_error(run_cli("data", "check", tiny_data, "--json", other), 2)
    assert str(other) in line and "not a pncd data-check report" in line
    assert other.read_text() == '{"my": "notes"}'
    text = tmp_path / "notes.txt"
    text.write_text("not json")
    one_error(run_cli("data", "check", tiny_data, "--json", text), 2)
    assert text.read_text() == "not json"

    report = tmp_path / "check.json"
    ok(run_cli("data", "check", tiny_data, "--json", report))
    first = json.loads(report.read_text())
    assert first["schema"] == "pncd.data-check/1" and first["ok"]
    ok(run_cli("data", "check", tiny_data, "--json", report))  # its own earlier report: replaced
    legacy = {k: v for k, v in first.items() if k != "schema"}  # an older pncd's report, without the key
    report.write_text(json.dumps(legacy))
    ok(run_cli("data", "check", tiny_data, "--json", report))
    assert json.loads(report.read_text())["schema"] == "pncd.data-check/1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check.json", "notes.json", "notes.txt"]
