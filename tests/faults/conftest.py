"""Shared pieces of the fault-injection suite: a tiny data set, run and export (built once).

Every case runs the real CLI in a subprocess and checks three things: the exit status, the one
line on stderr, and the state of the output folder afterwards. Fixtures that a test changes are
copied first (``copy_of``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.faults.fault_helpers import TINY, ok
from tests.helpers import run_cli


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "data"
    ok(run_cli("data", "synth", root, "--cases", "6", "--slices", "4", "--size", "32"))
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "run"
    ok(run_cli("train", "--model", "enet", "--data", tiny_data, "--epochs", "1", "--seed", "3", "--out", out, *TINY))
    return out


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "export"
    ok(run_cli("export", tiny_run, "--target", "onnxruntime", "--precision", "fp32", "--out", out,
               "--parity-images", "4"))
    return out


@pytest.fixture
def copy_of(tmp_path):
    def copy(src: Path, name: str | None = None) -> Path:
        dst = tmp_path / (name or src.name)
        shutil.copytree(src, dst)
        return dst

    return copy


@pytest.fixture
def readonly_dir(tmp_path):
    """A directory nobody may write in (chmod for a normal user; chattr +i for root, who
    ignores modes); skipped where neither is possible."""
    d = tmp_path / "readonly"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        undo = lambda: d.chmod(0o755)  # noqa: E731
    else:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode:
            pytest.skip("running as root without chattr +i: no way to make a read-only directory")
        undo = lambda: subprocess.run(["chattr", "-i", str(d)], check=False)  # noqa: E731
    try:
        probe = d / "probe"
        try:
            probe.mkdir()
        except OSError:
            pass
        else:
            probe.rmdir()
            pytest.skip("this file system lets the directory be written regardless")
        yield d
    finally:
        undo()
