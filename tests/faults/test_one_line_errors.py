"""What used to end in "unexpected ..." or leave things behind: a full disk during train or
export (SafetensorError, torch's and OpenVINO's stream errors) is one line naming the file and
saying to free space on the device, and train removes the run folder it started; a config file
value of the wrong type names the key and the type; --json under a regular file is bad input
(exit 2); a killed export's scratch folder in the system's temporary directory is removed by the
next export."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pncd.errors import RunFailed
from tests.faults.fault_helpers import TINY, ok, one_error, siblings
from tests.helpers import run_cli


@pytest.fixture
def small_device(tmp_path):
    """A 2 MiB file system (tmpfs; needs root and mount), unmounted after the test."""
    d = tmp_path / "small"
    d.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); the in-process tests simulate ENOSPC")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_train_on_a_full_device_is_one_line_and_leaves_nothing(tiny_data, small_device):
    out = small_device / "run"
    p = run_cli("train", "--model", "unet", "--data", tiny_data, "--epochs", "1", "--out", out, *TINY)
    line = one_error(p, 1)
    assert "unexpected" not in line and "free space on the device" in line and str(out) in line, line
    assert not out.exists() and siblings(out) == [] and list(small_device.iterdir()) == []


def test_export_on_a_full_device_is_one_line_and_leaves_nothing(tiny_run, small_device):
    # OpenVINO's serializer fails with "RuntimeError: basic_ios::clear" on a full device
    pytest.importorskip("openvino")
    out = small_device / "exp"
    (small_device / "filler").write_bytes(b"\0" * (1900 * 1024))
    p = run_cli("export", tiny_run, "--target", "openvino", "--precision", "fp32", "--out", out, "--parity-images", "2")
    line = one_error(p, 1)
    assert "unexpected" not in line and "free space on the device" in line and str(out) in line, line
    assert not out.exists() and siblings(out) == []


def _train(tiny_data, out):
    from pncd.options import DataOptions, TrainOptions, TrainRun
    from pncd.training.run import train

    return train(TrainRun(model="enet", out=out, data=DataOptions(data=str(tiny_data), size=32),
                          train=TrainOptions(epochs=1, batch=4, steps_per_epoch=1, tensorboard=False)))


def test_safetensors_enospc_names_the_file(tiny_data, tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*_a, **_k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "run"
    with pytest.raises(RunFailed, match=r"run/best\.safetensors: no space left on the device .*; free space on the device"):
        _train(tiny_data, out)
    assert not out.exists() and siblings(out) == []


def test_torch_stream_error_on_a_full_device_names_the_file(tiny_data, tmp_path, monkeypatch):
    import torch

    from pncd import rundir

    def full(*_a, **_k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(rundir, "free_bytes", lambda path: 4096)  # what a full device reports
    out = tmp_path / "run"
    with pytest.raises(RunFailed, match=r"run/last_state\.pt: no space left on the device \(\[enforce fail"):
        _train(tiny_data, out)
    assert not out.exists()


def test_enospc_on_the_config_names_it_and_removes_what_train_started(tiny_data, tmp_path, monkeypatch):
    from pncd import checkpoint

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "write_run_config", full)
    out = tmp_path / "empty-out"
    out.mkdir()  # an empty --out the user made stays; what train added goes
    with pytest.raises(RunFailed, match=r"empty-out/config\.json: no space left on the device"):
        _train(tiny_data, out)
    assert out.is_dir() and list(out.iterdir()) == []


def test_other_errors_pass_through_writing(tmp_path):
    from pncd.rundir import writing

    with pytest.raises(RuntimeError, match="basic_ios::clear"), writing(tmp_path / "x"):
        raise RuntimeError("basic_ios::clear: iostream error")  # plenty of space: not a full device
    with pytest.raises(ValueError), writing(tmp_path / "x"):
        raise ValueError("No space left on device")  # not a write failure


@pytest.mark.parametrize("text,expected", [("size = 32.7", "size must be a whole number, not 32.7 (float)"),
                                           ('data = ["a", "b"]', "data must be a string, not ['a', 'b'] (list)"),
                                           ("lr = [0.1]", "lr must be a number, not [0.1] (list)"),
                                           ('amp = "no"', "amp must be true or false")])
def test_config_value_of_the_wrong_type_names_key_and_type(text, expected, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text + "\n")
    line = one_error(run_cli("train", "--config", cfg, "--model", "enet", "--out", tmp_path / "run"), 2)
    assert str(cfg) in line and expected in line, line
    assert not (tmp_path / "run").exists()


def test_config_list_for_a_repeated_option(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("weight: pmd=1\n")  # pncd distill --weight NAME=W is repeated: the file gives a list
    line = one_error(run_cli("distill", "--config", cfg, "--teacher", tmp_path, "--student", "enet",
                             "--out", tmp_path / "st"), 2)
    assert f"config file {cfg}: weight must be a list, not 'pmd=1' (str)" in line, line
    cfg.write_text("weight: [pmd=1]\n")
    line = one_error(run_cli("distill", "--config", cfg, "--teacher", tmp_path, "--student", "enet",
                             "--out", tmp_path / "st"), 2)
    assert "config file" not in line and str(tmp_path) in line, line  # past the file: the teacher is no run


def test_json_under_a_regular_file_is_bad_input(tiny_data, tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    line = one_error(run_cli("data", "check", tiny_data, "--json", blocker / "report.json"), 2)
    assert str(blocker) in line and "--json" in line, line
    assert blocker.read_text() == "x"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_scratch_folders_are_removed(tmp_path, monkeypatch):
    import tempfile

    from pncd.rundir import remove_stale_scratch, scratch_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"pncd-export-{_dead_pid()}-abc"
    live = tmp_path / f"pncd-export-{os.getppid()}-abc"  # a process that is alive (pytest's parent)
    old = tmp_path / "pncd-export-k2j4h1x9"  # an older pncd's name, without a pid
    new = tmp_path / "pncd-export-q8w7e6r5"
    other = tmp_path / f"pncd-bench-{_dead_pid()}-abc"  # another kind: not this command's to remove
    for d in (dead, live, old, new, other):
        d.mkdir()
        (d / "model.onnx").write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    assert sorted(remove_stale_scratch("export")) == sorted([dead, old])
    assert live.is_dir() and new.is_dir() and other.is_dir()
    with scratch_dir("export") as s:
        assert s.parent == tmp_path and s.name.startswith(f"pncd-export-{os.getpid()}-")
    assert not s.exists()


def test_export_removes_the_scratch_folder_a_killed_export_left(tiny_run, tmp_path):
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    left = scratch_root / f"pncd-export-{_dead_pid()}-abc"
    left.mkdir()
    (left / "model.onnx").write_bytes(b"x" * 1000)
    out = tmp_path / "exp"
    ok(run_cli("export", tiny_run, "--target", "onnxruntime", "--precision", "fp32", "--out", out,
               "--parity-images", "2", env={"TMPDIR": str(scratch_root)}))
    assert [p.name for p in scratch_root.iterdir() if p.name.startswith("pncd-export-")] == []
