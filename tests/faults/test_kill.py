"""kill -9 during export and bench (train and distill: test_resume.py): nothing half-written is
left at --out, and the same command run again succeeds and leaves no temporaries behind."""

from __future__ import annotations

import json

from tests.faults.fault_helpers import kill_when, ok, siblings
from tests.helpers import run_cli


def test_kill9_during_export_then_rerun(tiny_run, tmp_path):
    out = tmp_path / "exp"
    args = ["export", tiny_run, "--target", "onnxruntime", "--precision", "fp32", "--out", out, "--parity-images", "2"]
    assert kill_when(args, lambda: bool(siblings(out))) == -9  # killed while writing its temporary
    assert not out.exists()
    ok(run_cli(*args))
    assert json.loads((out / "manifest.json").read_text())["checks"]["passed"]
    assert siblings(out) == []


def test_kill9_during_bench_then_rerun(tiny_export, tmp_path):
    out = tmp_path / "rep"
    args = ["bench", tiny_export, "--out", out, "--iters", "2", "--warmup", "0", "--n-boot", "100", "--overlays", "0",
            "--batch", "1"]
    assert kill_when(args, lambda: bool(siblings(out))) == -9
    assert not out.exists()
    ok(run_cli(*args))
    assert json.loads((out / "report.json").read_text())["schema"] == "pncd.bench/1"
    assert siblings(out) == []
