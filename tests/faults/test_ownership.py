"""--force replaces only what pncd wrote. A folder without pncd's marker
(.pncd-owned.json) is refused whole, and an entry of the new output that would land on a file
the marker does not list is refused too, in every command that writes an output directory;
an --out under a file is one line naming that file. Each refusal leaves the folder as it was."""

from __future__ import annotations

import json

import pytest

from tests.faults.fault_helpers import TINY, ok, one_error, siblings, tree
from tests.helpers import run_cli

BENCH = ["--iters", "1", "--warmup", "0", "--n-boot", "100", "--overlays", "0", "--batch", "1", "--no-reference"]


def _commands(tiny_data, tiny_run, tiny_export, out):
    """Every command that writes an output directory, writing to ``out``."""
    return {
        "train": ["train", "--model", "enet", "--data", tiny_data, "--epochs", "1", "--out", out, *TINY],
        "distill": ["distill", "--teacher", tiny_run, "--student", "enet", "--epochs", "1", "--out", out, *TINY],
        "eval": ["eval", tiny_run, "--out", out],
        "export": ["export", tiny_run, "--target", "onnxruntime", "--out", out, "--parity-images", "2"],
        "bench": ["bench", tiny_export, "--out", out, *BENCH],
        "qat": ["qat", tiny_run, "--out", out, "--steps", "1"],
        "data synth": ["data", "synth", out, "--cases", "1", "--slices", "1", "--size", "16"],
    }


@pytest.fixture
def users_folder(tmp_path):
    """A folder of the user's that holds the names pncd writes, and no .pncd-owned.json."""
    mine = tmp_path / "mine"
    (mine / "overlays").mkdir(parents=True)
    (mine / "config.json").write_text('{"my": "settings"}')
    (mine / "manifest.json").write_text('{"my": "manifest"}')
    (mine / "model.onnx").write_bytes(b"my model")
    (mine / "overlays" / "my_figure.png").write_bytes(b"my figure")
    return mine


def test_force_refuses_a_folder_pncd_did_not_write(tiny_data, tiny_run, tiny_export, users_folder):
    before = tree(users_folder)
    for name, args in _commands(tiny_data, tiny_run, tiny_export, users_folder).items():
        line = one_error(run_cli(*args, "--force"), 2)
        assert str(users_folder) in line and "not written by pncd" in line and ".pncd-owned.json" in line, (name, line)
        assert tree(users_folder) == before and siblings(users_folder) == [], name


def test_train_force_refuses_a_run_file_pncd_did_not_write(tiny_run, tiny_data, copy_of):
    """The marker lists what pncd wrote; a run file it does not list is the user's (refused
    before any training)."""
    run = copy_of(tiny_run)
    marker = json.loads((run / ".pncd-owned.json").read_text())
    marker["names"].remove("log.jsonl")
    (run / ".pncd-owned.json").write_text(json.dumps(marker))
    before = tree(run)
    line = one_error(run_cli("train", "--model", "enet", "--data", tiny_data, "--out", run, "--force", "--epochs", "1",
                             *TINY), 2)
    assert str(run / "log.jsonl") in line and "not written by pncd" in line
    assert tree(run) == before and siblings(run) == []


def test_export_force_refuses_to_replace_a_users_file_in_its_own_folder(tiny_run, tmp_path):
    """An OpenVINO export writes model.xml; the user's file of that name in an ONNX Runtime
    export's folder is not pncd's (the marker lists model.onnx): refused once the new export is
    built, before anything is replaced; the old export stays whole."""
    out = tmp_path / "exp"
    ok(run_cli("export", tiny_run, "--target", "onnxruntime", "--out", out, "--parity-images", "2"))
    (out / "model.xml").write_bytes(b"the user's own")
    before = tree(out)
    line = one_error(run_cli("export", tiny_run, "--target", "openvino", "--out", out, "--parity-images", "2",
                             "--force"), 2)
    assert str(out / "model.xml") in line and "not written by pncd" in line
    assert tree(out) == before and siblings(out) == []


def test_force_onto_an_empty_folder_or_pncds_own_still_works(tiny_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    ok(run_cli("eval", tiny_run, "--out", empty, "--force", "--overlays", "0"))
    (empty / "notes.txt").write_text("mine")
    ok(run_cli("eval", tiny_run, "--out", empty, "--force", "--overlays", "1"))
    names = {p.name for p in empty.iterdir()}
    assert {"metrics.json", "notes.txt", ".pncd-owned.json"} <= names and (empty / "notes.txt").read_text() == "mine"
    assert siblings(empty) == []


def test_data_synth_force_replaces_only_its_own_files(tmp_path):
    out = tmp_path / "synth"
    ok(run_cli("data", "synth", out, "--cases", "2", "--slices", "1", "--size", "16"))
    (out / "README.txt").write_text("my notes")
    ok(run_cli("data", "synth", out, "--cases", "3", "--slices", "1", "--size", "16", "--force"))
    assert (out / "README.txt").read_text() == "my notes" and len(list((out / "images").iterdir())) == 3
    assert siblings(out) == []


def test_out_under_a_file_is_one_line_naming_the_file(tiny_data, tiny_run, tiny_export, tmp_path):
    notes = tmp_path / "some_file.txt"
    notes.write_text("keep")
    commands = _commands(tiny_data, tiny_run, tiny_export, notes / "sub")
    commands["demo"] = ["demo", "--out", notes / "sub"]
    for name, args in [*commands.items(), *((f"{n} --force", [*commands[n], "--force"]) for n in ("export", "eval"))]:
        line = one_error(run_cli(*args), 2)
        assert f"{notes} is a file" in line and "choose another" in line and "File exists" not in line, (name, line)
    resume = ["train", "--model", "enet", "--data", tiny_data, "--epochs", "1", "--out", notes / "sub", "--resume", *TINY]
    assert f"{notes} is a file" in one_error(run_cli(*resume), 2)
    assert notes.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["some_file.txt"]
