"""A numeric option at 0 or below where that means nothing (``--epochs 0``: a run with no
weights; ``--batch 0``) is refused before any work: exit 2, one line naming the flag, nothing
written. The same ranges guard runs built from Python (pncd.options.RANGES,
pncd.distill.options.DISTILL_RANGES)."""

from __future__ import annotations

import pytest

from pncd.errors import PncdError
from tests.faults.fault_helpers import TINY, one_error
from tests.helpers import run_cli

TRAIN = [("--epochs", "0"), ("--epochs", "-1"), ("--batch", "0"), ("--batch", "-4"), ("--lr", "-0.001"),
         ("--min-lr", "-1e-5"), ("--weight-decay", "-0.1"), ("--size", "0"), ("--num-classes", "1"), ("--workers", "-1"),
         ("--steps-per-epoch", "0"), ("--seed", "-1"), ("--split-seed", "-1"), ("--rotation", "-5"),
         ("--lesion-fraction", "1.5"), ("--log-every", "0"), ("--clip-grad-norm", "-1"), ("--threads", "0")]
DISTILL = [("--epochs", "0"), ("--batch", "0"), ("--temperature", "0"), ("--tau", "-0.07"), ("--n-negatives", "0"),
           ("--w-pmd", "-1"), ("--kd-warmup", "2"), ("--pnscd-memory", "0")]
QAT = [("--steps", "0"), ("--batch", "0"), ("--lr", "0"), ("--temperature", "0"), ("--calib-images", "0"),
       ("--eval-every", "0"), ("--seed", "-1")]
EXPORT = [("--calib-size", "0"), ("--parity-images", "-1"), ("--ac-images", "-1"), ("--max-dice-drop", "0")]
BENCH = [("--iters", "0"), ("--batch", "0"), ("--warmup", "-1"), ("--n-boot", "0"), ("--seed", "-1"), ("--overlays", "-1"),
         ("--threads", "0"), ("--duration", "-1"), ("--accuracy-batch", "0")]


def _cases():
    for flag, value in TRAIN:
        yield "train", flag, value
    for flag, value in DISTILL:
        yield "distill", flag, value
    for flag, value in QAT:
        yield "qat", flag, value
    for flag, value in EXPORT:
        yield "export", flag, value
    for flag, value in BENCH:
        yield "bench", flag, value
    yield "eval", "--overlays", "-1"


@pytest.mark.parametrize("command,flag,value", list(_cases()), ids=lambda x: str(x))
def test_out_of_range_option_is_exit_2_naming_the_flag(command, flag, value, tiny_data, tmp_path):
    out = tmp_path / "out"
    anything = tmp_path / "a-run"  # an existing directory where a run or export is expected
    anything.mkdir()
    args = {
        "train": ["train", "--model", "enet", "--data", tiny_data, "--epochs", "1", *TINY],
        "distill": ["distill", "--teacher", anything, "--student", "enet", "--epochs", "1", *TINY],
        "qat": ["qat", anything],
        "export": ["export", anything, "--target", "onnxruntime"],
        "bench": ["bench", anything],
        "eval": ["eval", anything],
    }[command]
    line = one_error(run_cli(*args, "--out", out, flag, value), 2)
    assert flag in line, line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a-run"]


def test_epochs_0_from_python_is_refused_before_anything_is_written(tiny_data, tmp_path):
    from pncd.distill.options import DistillOptions, DistillRun
    from pncd.distill.run import distill
    from pncd.options import DataOptions, TrainOptions, TrainRun
    from pncd.training.run import train

    out = tmp_path / "run"
    data = DataOptions(data=str(tiny_data), size=32)
    with pytest.raises(PncdError, match=r"^--epochs must be in \[1, 100000\] \(got 0\)$"):
        train(TrainRun(model="enet", out=out, data=data, train=TrainOptions(epochs=0)))
    with pytest.raises(PncdError, match=r"^--steps-per-epoch must be >= 1 \(got 0\); leave it out"):
        train(TrainRun(model="enet", out=out, data=data, train=TrainOptions(steps_per_epoch=0)))
    with pytest.raises(PncdError, match=r"^--lr must be >= 0 \(got -1\.0\); 0 keeps the initial weights$"):
        distill(DistillRun(teacher=str(tmp_path), student="enet", out=out, train=TrainOptions(lr=-1.0)))
    with pytest.raises(PncdError, match=r"^--temperature must be > 0 \(got 0\.0\)$"):
        distill(DistillRun(teacher=str(tmp_path), student="enet", out=out, distill=DistillOptions(temperature=0.0)))
    with pytest.raises(PncdError, match=r"^--weight pmd=-0\.5: a weight must be >= 0"):
        distill(DistillRun(teacher=str(tmp_path), student="enet", out=out, distill=DistillOptions(weights={"pmd": -0.5})))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_help_shows_the_ranges():
    p = run_cli("train", "--help")
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    for shown in ("--epochs INTEGER RANGE [default: 50; 1<=x<=100000]", "--batch INTEGER RANGE Images per step; more than the train split holds is capped to it (a line says so). "
                  "[default: 8; x>=1]",
                  "--lr FLOAT RANGE [default: 0.001; x>=0]"):
        assert shown in text, shown
