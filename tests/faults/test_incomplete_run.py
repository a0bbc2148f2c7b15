"""A run stopped before its last epoch (Ctrl-C, kill, a NaN stop): ``pncd export`` and
``pncd eval`` of it warn in one line (how far it got, how to finish it) and record it: the
manifest's ``source.complete``/``epochs_done``/``epochs``, metrics.json's ``run_progress``;
``pncd bench`` of such an export and ``pncd distill`` from such a teacher warn too. A run still
being written by another process says so."""

from __future__ import annotations

import json
import signal

from pncd.outlock import out_lock
from tests.faults.fault_helpers import TINY, kill_when, ok
from tests.helpers import run_cli

EPOCHS = 12
EXPORT = ["--target", "onnxruntime", "--precision", "fp32", "--parity-images", "2"]


def _epochs_logged(run) -> int:
    return len([1 for x in (run / "log.jsonl").read_text().splitlines() if '"type": "epoch"' in x])


def _warnings(p) -> list[str]:
    return [ln for ln in p.stderr.splitlines() if ln.startswith("warning:") and "checkpoint so far" in ln]


def test_interrupted_run_is_exported_and_evaluated_with_a_warning_and_recorded(tiny_data, tmp_path):
    run = tmp_path / "run"
    # 12 epochs, Ctrl-C after the first: enough left that a test process descheduled on a busy CI
    # machine still interrupts the run. (A suite run as a background job inherits SIGINT ignored;
    # kill_when gives the child Ctrl-C's default.)
    args = ["train", "--model", "enet", "--data", tiny_data, "--epochs", str(EPOCHS), "--seed", "2", *TINY, "--out", run]
    args[args.index("--steps-per-epoch") + 1] = "4"
    # Wait for the first epoch's row: the resume state is written just before it, so a Ctrl-C
    # between the two would leave a finished epoch that the log does not show yet.
    logged = lambda: (run / "log.jsonl").is_file() and _epochs_logged(run) >= 1  # noqa: E731
    assert kill_when(args, logged, sig=signal.SIGINT) == 130  # Ctrl-C
    done = _epochs_logged(run)
    assert 1 <= done < EPOCHS

    p = ok(run_cli("export", run, *EXPORT, "--out", tmp_path / "exp"))
    assert _warnings(p) == [f"warning: {run} stopped at epoch {done} of {EPOCHS} (interrupted: killed, stopped or diverged); "
                            f"exporting its best checkpoint so far; finish it with pncd train --out {run} --resume"]
    source = json.loads((tmp_path / "exp" / "manifest.json").read_text())["source"]
    assert (source["complete"], source["epochs_done"], source["epochs"]) == (False, done, EPOCHS)

    p = ok(run_cli("eval", run, "--split", "test", "--overlays", "0", "--out", tmp_path / "ev"))
    assert len(_warnings(p)) == 1 and "evaluating its best checkpoint so far" in _warnings(p)[0]
    progress = json.loads((tmp_path / "ev" / "metrics.json").read_text())["run_progress"]
    assert progress == {"complete": False, "epochs_done": done, "epochs": EPOCHS}

    p = ok(run_cli("bench", tmp_path / "exp", "--out", tmp_path / "rep", "--iters", "1", "--warmup", "0", "--n-boot", "100",
                   "--overlays", "0", "--batch", "1", "--no-reference"))
    assert f"warning: {tmp_path / 'exp'} was exported from {run} at epoch {done} of {EPOCHS} (the run had not finished)" in p.stderr
    p = ok(run_cli("distill", "--teacher", run, "--student", "enet", "--epochs", "1", *TINY, "--no-check-teacher",
                   "--out", tmp_path / "student"))
    assert len(_warnings(p)) == 1 and "distilling from its best checkpoint so far" in _warnings(p)[0]

    ok(run_cli("train", "--model", "enet", "--out", run, "--resume"))  # finish it as the warning says
    p = ok(run_cli("export", run, *EXPORT, "--out", tmp_path / "exp", "--force"))
    assert _warnings(p) == []
    source = json.loads((tmp_path / "exp" / "manifest.json").read_text())["source"]
    assert (source["complete"], source["epochs_done"], source["epochs"]) == (True, EPOCHS, EPOCHS)


def test_complete_run_exports_without_a_warning(tiny_export):
    source = json.loads((tiny_export / "manifest.json").read_text())["source"]
    assert (source["complete"], source["epochs_done"], source["epochs"]) == (True, 1, 1)


def test_run_still_being_written_says_so(tiny_run, copy_of, tmp_path):
    run = copy_of(tiny_run)
    with out_lock(run, "pncd train"):
        p = ok(run_cli("export", run, *EXPORT, "--out", tmp_path / "exp"))
    [line] = _warnings(p)
    assert line.startswith(f"warning: {run} is still being trained by another pncd process (pid ") and "1 of 1" in line
    assert json.loads((tmp_path / "exp" / "manifest.json").read_text())["source"]["complete"] is False
