"""pncd train / eval end to end on the synthetic phantoms (tiny sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import KILL_AFTER_STEP, error_line, run_cli

TINY = ["--size", "32", "--batch", "4", "--steps-per-epoch", "3", "--workers", "0"]


def _weights(path):
    return load_file(str(path))


def test_train_writes_run_and_eval(synthetic_root, tmp_path):
    out = tmp_path / "run"
    p = run_cli("train", "--model", "enet", "--data", synthetic_root, "--epochs", "2", "--out", out, *TINY)
    assert p.returncode == 0, p.stderr
    for name in ("config.json", "best.safetensors", "last.safetensors", "last_state.pt", "log.jsonl"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["name"] == "enet" and cfg["model"]["taps"]["high"]["stride"] == 8
    assert cfg["data"]["size"] == 32 and cfg["options"]["epochs"] == 2
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert all(0.0 <= r["val_dice"] <= 1.0 for r in epochs)

    ev = run_cli("eval", out, "--split", "test", "--overlays", "2")
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads((out / "eval-test" / "metrics.json").read_text())
    assert metrics["summary"]["n_cases"] == len(metrics["per_case"]) > 0
    assert len(list((out / "eval-test").glob("overlay_*.png"))) == 2


# A run started through the typed API whose process kills itself (SIGKILL: no clean-up, no
# finally) after its 4th optimizer step, i.e. in epoch 2 before its 2nd batch.
KILLED_AT_STEP_4 = KILL_AFTER_STEP + """
from pncd.options import DataOptions, TrainOptions, TrainRun
from pncd.training.run import train

train(TrainRun(model="enet", out=sys.argv[2], threads=1, data=DataOptions(data=sys.argv[1], size=32),
               train=TrainOptions(epochs=3, batch=4, steps_per_epoch=3, workers=0, seed=7), on_step=[kill_after(4)]))
"""


def test_resume_after_kill_matches_uninterrupted(synthetic_root, tmp_path):
    """A run killed mid-epoch (SIGKILL, no clean-up) and resumed ends with the same weights as
    an uninterrupted one; the killed run was started from Python and resumed from the command
    line with no other flag (the options come back from what the typed API recorded)."""
    args = ["train", "--model", "enet", "--data", synthetic_root, "--epochs", "3", *TINY, "--seed", "7", "--threads", "1"]
    full = run_cli(*args, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr

    run = tmp_path / "resumed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_STEP_4, str(synthetic_root), str(run)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    state_epoch = torch.load(run / "last_state.pt", weights_only=True)["epoch"]
    assert int(state_epoch) == 0  # only the first epoch had finished
    assert [json.loads(x)["epoch"] for x in (run / "log.jsonl").read_text().splitlines() if '"epoch"' in x] == [0]
    after_first_epoch = _weights(run / "last.safetensors")
    resumed = run_cli("train", "--model", "enet", "--out", run, "--resume", "--threads", "1", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr

    a, b = _weights(tmp_path / "full" / "last.safetensors"), _weights(run / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the resumed epochs really trained (the comparison above is not vacuous)
    assert any(not torch.equal(b[k], after_first_epoch[k]) for k in b)
    first = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines() if '"epoch"' in x]
    assert first[-1]["epoch"] == 2


def test_typed_train_returns_the_run_and_records_the_cli_options(synthetic_root, tmp_path):
    """``train(TrainRun)`` writes what ``pncd train`` writes: config.json options under the flag
    names, which ``pncd train --resume`` restores; the result names the run and its best Dice."""
    from pncd.options import DataOptions, TrainOptions, TrainRun
    from pncd.training.run import train

    out = tmp_path / "api"
    result = train(TrainRun(model="enet", out=out, data=DataOptions(data=str(synthetic_root), size=32),
                            train=TrainOptions(epochs=1, batch=4, steps_per_epoch=2, seed=3, tensorboard=False)))
    epochs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"type": "epoch"' in x]
    assert result.out == out and result.epochs == 1 and result.last_epoch == epochs[-1]
    assert result.best_val_dice == max(r["val_dice"] for r in epochs)
    cli = tmp_path / "cli"
    assert run_cli("train", "--model", "enet", "--data", synthetic_root, "--size", "32", "--epochs", "1", "--batch", "4",
                   "--steps-per-epoch", "2", "--seed", "3", "--out", cli).returncode == 0
    api_opts, cli_opts = (json.loads((r / "config.json").read_text())["options"] for r in (out, cli))
    skip = {"out", "config", "tensorboard"}
    assert {k: v for k, v in api_opts.items() if k not in skip} == {k: v for k, v in cli_opts.items() if k not in skip}
    p = run_cli("train", "--model", "enet", "--out", out, "--resume", "--epochs", "2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "config.json").read_text())["options"]["seed"] == 3


def test_existing_out_refused_and_nothing_changed(synthetic_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    p = run_cli("train", "--model", "enet", "--data", synthetic_root, "--epochs", "1", "--out", out, *TINY)
    assert p.returncode == 2
    assert "already exists" in error_line(p) and str(out) in error_line(p)
    assert sorted(x.name for x in out.iterdir()) == ["keep.txt"]


def test_resume_with_other_architecture_is_refused(synthetic_root, tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "--model", "enet", "--data", synthetic_root, "--epochs", "1", "--out", out, *TINY).returncode == 0
    p = run_cli("train", "--model", "unet", "--data", synthetic_root, "--epochs", "2", "--out", out, "--resume", *TINY)
    assert p.returncode == 2
    assert "enet" in error_line(p) and "unet" in error_line(p)


def test_nan_loss_stops_with_clear_error(synthetic_root, tmp_path):
    out = tmp_path / "run"
    p = run_cli("train", "--model", "enet", "--data", synthetic_root, "--epochs", "2", "--out", out, "--lr", "1e30", *TINY)
    assert p.returncode == 1, p.stderr
    line = error_line(p)
    assert line.startswith("Error: non-finite loss") and "--lr" in line


def test_config_file_sets_defaults_and_flags_win(synthetic_root, tmp_path):
    cfg = tmp_path / "train.toml"
    cfg.write_text(f'model = "enet"\ndata = "{synthetic_root}"\nepochs = 1\nsize = 32\nbatch = 4\nsteps-per-epoch = 2\nseed = 3\n')
    out = tmp_path / "run"
    p = run_cli("train", "--config", cfg, "--seed", "5", "--out", out)
    assert p.returncode == 0, p.stderr
    saved = json.loads((out / "config.json").read_text())["options"]
    assert saved["seed"] == 5 and saved["epochs"] == 1 and saved["config"] == str(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    p = run_cli("train", "--config", bad, "--model", "enet", "--out", tmp_path / "x")
    assert p.returncode == 2 and "epochz" in p.stderr


def test_ddp_two_cpu_processes_on_gloo(synthetic_root, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "pncd.cli",
           "train", "--model", "enet", "--data", str(synthetic_root), "--epochs", "2", "--out", str(out), "--device", "cpu", *TINY]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["type"] == "epoch"] == [0, 1]  # rank 0 alone logs
    assert (out / "best.safetensors").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["name"] == "enet"


def test_unavailable_stage_says_why_whatever_its_arguments(monkeypatch, capsys):
    """A stage whose module fails to import names the import error, even when given its options."""
    from pncd import cli

    monkeypatch.setitem(cli.COMMANDS, "export", "pncd.no_such_module:export_command")
    with pytest.raises(SystemExit) as e:
        cli.main(["export", "runs/x", "--target", "openvino", "--precision", "int8", "--out", "o"])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: 'pncd export' is unavailable:") and "no_such_module" in err
    assert "No such option" not in err
