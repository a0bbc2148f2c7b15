"""--force checks the inputs first, builds the new output beside the old and swaps at the
end, refuses to replace the run it reads, keeps files pncd did not write, and refuses a file."""

from __future__ import annotations

import json

from tests.faults.fault_helpers import TINY, ok, one_error, siblings, tree
from tests.helpers import run_cli


def test_train_force_with_broken_data_keeps_the_old_run(tiny_run, copy_of, tmp_path):
    run = copy_of(tiny_run)
    (run / "notes.txt").write_text("mine")
    before = tree(run)
    broken = tmp_path / "broken"
    (broken / "images").mkdir(parents=True)
    line = one_error(run_cli("train", "--model", "enet", "--data", broken, "--out", run, "--force", "--epochs", "1", *TINY), 2)
    assert str(broken) in line
    assert tree(run) == before and siblings(run) == []


def test_train_force_replaces_only_pncd_files(tiny_run, tiny_data, copy_of):
    run = copy_of(tiny_run)
    (run / "notes.txt").write_text("mine")
    ok(run_cli("train", "--model", "enet", "--data", tiny_data, "--out", run, "--force", "--epochs", "1", "--seed", "9", *TINY))
    assert json.loads((run / "config.json").read_text())["options"]["seed"] == 9
    assert (run / "notes.txt").read_text() == "mine"
    assert {"best.safetensors", "last.safetensors", "last_state.pt", "log.jsonl", ".pncd-owned.json"} <= {p.name for p in run.iterdir()}
    assert len((run / "log.jsonl").read_text().splitlines()) >= 1 and siblings(run) == []


def test_force_onto_the_source_run_or_its_parent_is_refused(tiny_run, copy_of):
    run = copy_of(tiny_run)
    before = tree(run)
    line = one_error(run_cli("export", run, "--target", "onnxruntime", "--out", run, "--force"), 2)
    assert str(run) in line and "--force" in line
    line = one_error(run_cli("export", run, "--target", "onnxruntime", "--out", run.parent, "--force"), 2)
    assert "holding the input" in line
    line = one_error(run_cli("eval", run, "--out", run, "--force"), 2)
    assert str(run) in line
    line = one_error(run_cli("train", "--model", "enet", "--data", run.parent, "--out", run.parent, "--force"), 2)
    assert "input" in line
    assert tree(run) == before


def test_bench_force_onto_its_artifact_is_refused(tiny_export, copy_of):
    art = copy_of(tiny_export)
    before = tree(art)
    line = one_error(run_cli("bench", art, "--out", art, "--force"), 2)
    assert str(art) in line and tree(art) == before


def test_eval_force_keeps_other_files(tiny_run, copy_of, tmp_path):
    run = copy_of(tiny_run)
    out = tmp_path / "ev"
    ok(run_cli("eval", run, "--out", out, "--overlays", "1"))
    (out / "notes.txt").write_text("mine")
    ok(run_cli("eval", run, "--out", out, "--force", "--overlays", "0"))
    names = {p.name for p in out.iterdir()}
    assert "notes.txt" in names and "metrics.json" in names
    assert not any(n.startswith("overlay_") for n in names)  # pncd's old overlays went
    assert siblings(out) == []


def test_force_onto_a_regular_file_is_one_line(tiny_run, tmp_path):
    f = tmp_path / "file"
    f.write_text("keep")
    line = one_error(run_cli("export", tiny_run, "--target", "onnxruntime", "--out", f, "--force"), 2)
    assert str(f) in line and "is a file" in line
    assert f.read_text() == "keep"
    p = run_cli("train", "--model", "enet", "--out", f, "--force")
    assert p.returncode == 2 and "is a file" in p.stderr and f.read_text() == "keep"
