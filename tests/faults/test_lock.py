"""One pncd process per --out. A second train, distill or qat on an --out that
another process is writing fails at once (exit 2, one line naming that process) and changes
nothing; the first is unaffected; the lock goes with its process, even after kill -9."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pncd.outlock import lock_path, out_lock
from tests.faults.fault_helpers import TINY, kill_when, ok, one_error, siblings, tree
from tests.helpers import run_cli

# ``train`` from Python (the code pncd train runs) that stops after its first optimizer step,
# with the run half-written and its lock held, until the file argv[4] appears.
PAUSED_TRAIN = """
import sys, time
from pathlib import Path
from pncd.options import DataOptions, TrainOptions, TrainRun
from pncd.training.run import train

paused, go = Path(sys.argv[3]), Path(sys.argv[4])

def pause(trainer):
    if trainer.global_step == 1:
        paused.write_text("paused")
        while not go.exists():
            time.sleep(0.05)

train(TrainRun(model="enet", out=sys.argv[2], threads=1, data=DataOptions(data=sys.argv[1], size=32),
               train=TrainOptions(epochs=1, batch=4, steps_per_epoch=2, workers=0, seed=1, tensorboard=False),
               on_step=[pause]))
"""


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the first train ended (status {proc.returncode}): {proc.stderr.read()[-3000:]}")
        assert time.monotonic() - t0 < timeout, "the first train never reached its first step"
        time.sleep(0.05)


def test_second_train_on_a_run_being_written_is_refused_and_the_first_finishes(tiny_data, tmp_path):
    out, paused, go = tmp_path / "run", tmp_path / "paused", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([sys.executable, "-c", PAUSED_TRAIN, str(tiny_data), str(out), str(paused), str(go)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(paused, first)
        assert lock_path(out).is_file()
        before = tree(out)
        assert "config.json" in before  # the first run is half-written
        fresh = ["--data", tiny_data, "--epochs", "2", "--seed", "9", *TINY]
        for extra in (fresh, [*fresh, "--force"], ["--resume", "--epochs", "2"]):
            p = run_cli("train", "--model", "enet", "--out", out, *extra)
            line = one_error(p, 2)
            assert f"{out} is in use by another pncd process (pid {first.pid}" in line, line
            assert "pncd train" in line and "started " in line and "choose another --out" in line
            assert "loading" not in p.stderr  # refused at once, before any data is read
        assert tree(out) == before and siblings(out) == [lock_path(out).name]  # nothing changed, no staging
        go.touch()
        assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
    finally:
        go.touch()
        if first.poll() is None:
            first.kill()
            first.wait()
    assert siblings(out) == []  # the lock file went with its holder
    assert (out / "best.safetensors").is_file()
    # the run is the first process's alone: one epoch of its own options, then free for the next
    ok(run_cli("train", "--model", "enet", "--out", out, "--resume", "--epochs", "2"))
    assert siblings(out) == []


@pytest.mark.parametrize("command", ["distill", "qat", "train --resume", "train --force"])
def test_every_run_writer_is_refused_while_the_lock_is_held(command, tiny_run, copy_of, tmp_path):
    run = copy_of(tiny_run, "held")
    before = tree(run)
    args = {
        "distill": ["distill", "--teacher", tiny_run, "--student", "enet", "--epochs", "1", *TINY, "--out", run,
                    "--resume"],
        "qat": ["qat", tiny_run, "--out", run, "--force", "--steps", "1"],
        "train --resume": ["train", "--model", "enet", "--out", run, "--resume", "--epochs", "2"],
        "train --force": ["train", "--model", "enet", "--data", tiny_run.parent, "--out", run, "--force", *TINY],
    }[command]
    with out_lock(run, "pncd test"):
        line = one_error(run_cli(*args), 2)
        assert f"{run} is in use by another pncd process (pid {os.getpid()}" in line and "pncd test" in line, line
    assert tree(run) == before and siblings(run) == []


def test_a_fresh_out_is_refused_too_and_nothing_is_created(tiny_data, tmp_path):
    out = tmp_path / "new" / "run"
    with out_lock(out, "pncd test"):
        one_error(run_cli("train", "--model", "enet", "--data", tiny_data, "--out", out, *TINY), 2)
        assert sorted(p.name for p in out.parent.iterdir()) == [lock_path(out).name]
    assert not out.parent.exists()  # the folder made for the lock went with it


def test_a_failed_train_leaves_no_lock_and_no_folder(tmp_path):
    broken = tmp_path / "broken"
    (broken / "images").mkdir(parents=True)
    out = tmp_path / "a" / "b" / "run"
    one_error(run_cli("train", "--model", "enet", "--data", broken, "--out", out, *TINY), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_kill9_leaves_no_lock_that_blocks_the_next_run(tiny_data, tmp_path):
    """flock goes with the process; a DataLoader worker (--workers 1, forked) does not keep it."""
    run = tmp_path / "killed"
    args = ["train", "--model", "enet", "--data", tiny_data, "--epochs", "3", "--seed", "4", "--size", "32", "--batch", "4",
            "--steps-per-epoch", "2", "--workers", "1", "--out", run]
    assert kill_when(args, lambda: (run / "last_state.pt").is_file()) == -9
    assert lock_path(run).is_file()  # left behind by the killed process, but not locked
    ok(run_cli("train", "--model", "enet", "--out", run, "--resume", "--epochs", "3"))
    assert siblings(run) == []
