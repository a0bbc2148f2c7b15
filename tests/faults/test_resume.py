"""--resume restores what the run recorded and refuses what contradicts it; kill -9
during train or distill, then --resume, ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from tests.faults.fault_helpers import TINY, kill_when, ok, one_error, tree
from tests.helpers import run_cli


def _config(run):
    return json.loads((run / "config.json").read_text())


def test_resume_restores_data_size_batch_seed(tiny_run, copy_of, tmp_path):
    """The README's resume line (no --data/--size/--batch/--seed) continues the run as recorded."""
    run = copy_of(tiny_run)
    before = _config(run)
    p = ok(run_cli("train", "--model", "enet", "--out", run, "--resume", "--epochs", "2", cwd=tmp_path))
    assert "resuming" in p.stderr + p.stdout
    after = _config(run)
    assert after["data"] == before["data"] and after["data"]["size"] == 32
    for key in ("batch", "seed", "size", "steps_per_epoch", "lr"):
        assert after["options"][key] == before["options"][key], key
    assert after["options"]["epochs"] == 2
    epochs = [json.loads(x)["epoch"] for x in (run / "log.jsonl").read_text().splitlines() if '"type": "epoch"' in x]
    assert epochs == [0, 1]


def test_resume_refuses_contradicting_flags_naming_both_values(tiny_run, copy_of, tmp_path):
    run = copy_of(tiny_run)
    before = tree(run)
    for flag, value, recorded in (("--size", "64", "32"), ("--seed", "0", "3"), ("--batch", "8", "4")):
        line = one_error(run_cli("train", "--model", "enet", "--out", run, "--resume", "--epochs", "2", flag, value), 2)
        assert flag in line and value in line and recorded in line and "config.json" in line
    other = tmp_path / "other-data"
    other.mkdir()
    line = one_error(run_cli("train", "--model", "enet", "--out", run, "--resume", "--data", other), 2)
    assert str(other) in line and "--data" in line
    cfg = tmp_path / "c.toml"
    cfg.write_text("size = 64\n")
    line = one_error(run_cli("train", "--config", cfg, "--model", "enet", "--out", run, "--resume"), 2)
    assert "--size 64" in line and "--config" in line
    assert tree(run) == before  # nothing rewritten


def test_resume_without_a_finished_epoch_says_so(tmp_path):
    line = one_error(run_cli("train", "--model", "enet", "--out", tmp_path / "none", "--resume"), 2)
    assert "no run to resume" in line and not (tmp_path / "none").exists()


def _weights(path):
    return load_file(str(path))


def _assert_same_weights(a, b):
    a, b = _weights(a), _weights(b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_kill9_during_train_then_resume_matches_uninterrupted(tiny_data, tmp_path):
    args = ["train", "--model", "enet", "--data", tiny_data, "--epochs", "3", "--seed", "5", *TINY]
    ok(run_cli(*args, "--out", tmp_path / "full"))
    run = tmp_path / "killed"
    status = kill_when([*args, "--out", run], lambda: (run / "last_state.pt").is_file())
    assert status == -9
    ok(run_cli("train", "--model", "enet", "--out", run, "--resume", "--epochs", "3"))
    _assert_same_weights(tmp_path / "full" / "last.safetensors", run / "last.safetensors")


def test_kill9_during_distill_then_resume_matches_uninterrupted(tiny_run, tmp_path):
    args = ["distill", "--teacher", tiny_run, "--student", "enet", "--epochs", "3", "--seed", "2", *TINY]
    ok(run_cli(*args, "--out", tmp_path / "full"))
    run = tmp_path / "killed"
    status = kill_when([*args, "--out", run], lambda: (run / "last_state.pt").is_file())
    assert status == -9
    assert int(torch.load(run / "last_state.pt", weights_only=True)["epoch"]) < 2  # it really was cut short
    # the distillation options come back from config.json: no --teacher, --student or weights
    ok(run_cli("distill", "--out", run, "--resume"))
    _assert_same_weights(tmp_path / "full" / "last.safetensors", run / "last.safetensors")
    assert _config(run)["distill"] == _config(tmp_path / "full")["distill"]
    recorded = _config(run)["options"]["w_pmd"]
    other = recorded + 0.25
    line = one_error(run_cli("distill", "--out", run, "--resume", "--w-pmd", str(other)), 2)
    assert f"--w-pmd {other!r}" in line and f"recorded --w-pmd {recorded!r}" in line
