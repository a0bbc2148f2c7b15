"""Work is bounded before it starts: --batch above the train split is capped (one line says so),
--epochs and --size have upper bounds and the activation memory is estimated before anything
large is allocated (--size 1048576 tried a 17 TB allocation: "unexpected RuntimeError"), and
--resume with --force is refused instead of resuming. (--lr 0 stays allowed: it keeps the initial
weights, which the tests of identical initialisation use; docs/errors.md says so.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from pncd.errors import PncdError
from tests.faults.fault_helpers import TINY, ok, one_error, siblings, tree
from tests.helpers import run_cli

TRAIN = ["train", "--model", "enet", "--epochs", "1"]


def _without(args: list[str], flag: str) -> list[str]:
    i = args.index(flag)
    return args[:i] + args[i + 2:]


def test_batch_above_the_train_split_is_capped_with_one_line(tiny_data, tmp_path):
    out = tmp_path / "run"
    p = ok(run_cli(*TRAIN, "--data", tiny_data, "--out", out, *_without(TINY, "--batch"), "--batch", "100000"))
    notes = [ln for ln in p.stderr.splitlines() if "--batch 100000" in ln]
    assert len(notes) == 1 and "16 slices of the train split" in notes[0] and "--batch 16" in notes[0], p.stderr
    assert (out / "best.safetensors").is_file()


@pytest.mark.parametrize("flag,value", [("--epochs", "100001"), ("--epochs", "100000000000000000000000"),
                                        ("--size", "1048576"), ("--size", "4112")])
def test_unbounded_values_are_refused_before_any_work(flag, value, tiny_data, tmp_path):
    out = tmp_path / "run"
    args = [*TRAIN, "--data", tiny_data, "--out", out, *TINY]
    if flag == "--size":
        args = _without(args, "--size")
    line = one_error(run_cli(*args, flag, value), 2)
    assert flag in line, line
    assert not out.exists() and siblings(out) == []


def test_config_file_epochs_1e23_is_refused(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("epochs = 1e23\n")
    line = one_error(run_cli("train", "--config", cfg, "--model", "enet", "--out", tmp_path / "run"), 2)
    assert str(cfg) in line and "epochs" in line and "whole number" in line
    assert not (tmp_path / "run").exists()


def test_python_runs_have_the_same_bounds(tmp_path):
    from pncd.options import DataOptions, TrainOptions, TrainRun
    from pncd.training.run import train

    out = tmp_path / "run"
    cases = [(dict(train=TrainOptions(epochs=10**23)), r"^--epochs must be in \[1, 100000\]"),
             (dict(train=TrainOptions(epochs=1e23)), r"^--epochs must be a whole number"),
             (dict(data=DataOptions(size=32.7)), r"^--size must be a whole number in \[16, 4096\] \(got 32\.7\)"),
             (dict(data=DataOptions(size=1048576)), r"^--size must be in \[16, 4096\]"),
             (dict(resume=True, force=True), r"^--resume and --force contradict each other")]
    for kw, pattern in cases:
        with pytest.raises(PncdError, match=pattern):
            train(TrainRun(model="enet", out=out, **kw))
    assert list(tmp_path.iterdir()) == []


def test_activation_memory_is_estimated_before_any_allocation(monkeypatch):
    import torch

    from pncd import models
    from pncd.training import memory

    unet = models.create("unet", in_channels=1, num_classes=2)
    per_sample = memory.activation_bytes(unet, 1, 4096)
    assert per_sample is not None and per_sample > 40 * 2**30  # measured on the meta device: nothing allocated
    assert memory.activation_bytes(unet, 1, 128) * 1024 == per_sample  # grows with the square of the side
    monkeypatch.setattr(memory, "available_bytes", lambda device: (16 * 2**30, "this machine"))
    with pytest.raises(PncdError, match=r"^--size 4096: training unet needs at least [\d.]+ GiB .* 16\.0 GiB free; "
                                        r"lower --size"):
        memory.check_fits(per_sample, 1, 4096, torch.device("cpu"), False, "unet")
    small = memory.activation_bytes(unet, 1, 256)
    with pytest.raises(PncdError, match=r"^--size 256 with --batch 4096: .* lower --batch to \d+ or --size"):
        memory.check_fits(small, 4096, 256, torch.device("cpu"), False, "unet")
    memory.check_fits(small, 8, 256, torch.device("cpu"), False, "unet")  # fits: nothing raised


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def test_size_4096_is_refused_by_the_cli_before_training(tiny_data, tmp_path):
    if _mem_available() > 800 * 2**30:
        pytest.skip("this machine has the memory for a batch of 16 U-Net activations at 4096 x 4096")
    out = tmp_path / "run"
    args = ["train", "--model", "unet", "--epochs", "1", "--data", tiny_data, "--out", out, "--size", "4096",
            "--batch", "16", "--steps-per-epoch", "1", "--workers", "0"]
    line = one_error(run_cli(*args), 2)
    assert "--size 4096" in line and "GiB" in line and "unet" in line, line
    assert not out.exists() and siblings(out) == []


def test_resume_with_force_is_refused(tiny_run, copy_of):
    run = copy_of(tiny_run)
    before = tree(run)
    line = one_error(run_cli("train", "--model", "enet", "--out", run, "--resume", "--force", "--epochs", "2"), 2)
    assert "--resume and --force" in line and str(run) in line
    assert tree(run) == before and siblings(run) == []
