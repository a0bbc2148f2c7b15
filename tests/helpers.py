"""Test helpers: run the real CLI in a subprocess (exit codes, crashes, torchrun)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, env: dict | None = None, timeout: int = 300, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pncd.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)


EXPERIMENTS = Path(__file__).resolve().parents[1] / "bench" / "experiments"


def experiment(name: str):
    """Import one of bench/experiments/*.py: scripts kept out of the wheel, so not part of the
    ``pncd.bench`` package; they import each other as siblings, as they do when run as scripts."""
    import importlib

    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))
    return importlib.import_module(name)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one-line error the CLI printed (the last non-empty stderr line)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def settle_batchnorm(model, batches) -> "torch.nn.Module":
    """BatchNorm running statistics as the cumulative average over ``batches`` (an iterable of
    input tensors), then eval mode: a freshly initialised network in eval mode can blow up."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    return model.eval()


# The head of a Python script (run with ``python -c``) whose run kills its own process (SIGKILL: no
# clean-up, no finally) once the trainer reaches a given optimizer step: pass
# ``on_step=[kill_after(N)]`` to the typed API.
KILL_AFTER_STEP = """
import os, signal, sys

def kill_after(step):
    def callback(trainer):
        if trainer.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
    return callback
"""
