"""OS errors (a read-only --out), schema errors (config.json without "model") and a broken
teacher factory are one line and a non-zero exit in every command; PNCD_DEBUG=1 or --debug adds
the traceback."""

from __future__ import annotations

import json

import pytest

from tests.faults.fault_helpers import TINY, one_error
from tests.helpers import run_cli


@pytest.fixture
def commands(tiny_data, tiny_run, tiny_export, tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"schema": "pncd.bench/1", "entries": [
        {"id": "r", "key": "r", "kind": "reference", "dice": 0.5, "voe": 0.5, "rvd": 0.1}]}))

    def make(ro):
        return {
            "data synth": ["data", "synth", ro / "synth", "--cases", "1", "--slices", "1", "--size", "16"],
            "data check --json": ["data", "check", tiny_data, "--json", ro / "check.json"],
            "train": ["train", "--model", "enet", "--data", tiny_data, "--epochs", "1", "--out", ro / "run", *TINY],
            "distill": ["distill", "--teacher", tiny_run, "--student", "enet", "--epochs", "1", "--out", ro / "st", *TINY],
            "eval": ["eval", tiny_run, "--out", ro / "ev"],
            "export": ["export", tiny_run, "--target", "onnxruntime", "--out", ro / "exp", "--parity-images", "2"],
            "bench": ["bench", tiny_export, "--out", ro / "rep", "--iters", "1", "--warmup", "0", "--n-boot", "100"],
            "gate --update-baseline": ["gate", report, "--baseline", ro / "base.json", "--update-baseline"],
        }

    return make


def test_read_only_out_is_one_line_in_every_command(commands, readonly_dir):
    for name, args in commands(readonly_dir).items():
        p = run_cli(*args)
        line = one_error(p, 1)
        assert str(readonly_dir) in line and ("permission" in line.lower() or "not permitted" in line), (name, line)
        assert list(readonly_dir.iterdir()) == [], name


def test_config_json_without_model_is_bad_input(tiny_run, copy_of, tmp_path):
    run = copy_of(tiny_run)
    cfg = json.loads((run / "config.json").read_text())
    del cfg["model"]
    (run / "config.json").write_text(json.dumps(cfg))
    for args in (["eval", run, "--out", tmp_path / "ev"],
                 ["export", run, "--target", "onnxruntime", "--out", tmp_path / "exp"],
                 ["distill", "--teacher", run, "--student", "enet", "--out", tmp_path / "st", *TINY]):
        line = one_error(run_cli(*args), 2)
        assert str(run / "config.json") in line and "'model'" in line, line
    assert not any(p.name in ("ev", "exp", "st") for p in tmp_path.iterdir())


def test_teacher_factory_that_is_not_one_is_one_line(tmp_path):
    line = one_error(run_cli("distill", "--teacher", "os:system", "--student", "enet", "--out", tmp_path / "st"), 2)
    assert "--teacher os:system: calling system() failed (TypeError" in line
    assert "takes no arguments and returns a torch.nn.Module" in line
    assert not (tmp_path / "st").exists()


def test_debug_shows_the_traceback(tmp_path):
    for env, pre in (({"PNCD_DEBUG": "1"}, []), ({}, ["--debug"])):
        p = run_cli(*pre, "distill", "--teacher", "os:system", "--student", "enet", "--out", tmp_path / "st", env=env)
        assert p.returncode == 2 and "Traceback" in p.stderr and p.stderr.strip().splitlines()[-1].startswith("Error:")
