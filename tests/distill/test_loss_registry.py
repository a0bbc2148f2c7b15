"""The distillation loss registry: every loss scores one DistillBatch; ``--weight NAME=W``; a new
loss is one file and one registry line; the four built-in losses compute what they always did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import error_line, run_cli

TINY = ["--size", "32", "--batch", "4", "--epochs", "1", "--steps-per-epoch", "2", "--log-every", "1"]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def teacher_run(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "enet"
    p = run_cli("train", "--model", "enet", "--data", synthetic_root, "--out", out, *TINY)
    assert p.returncode == 0, p.stderr
    return out


def _rows(run, kind):
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["type"] == kind]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_builtin_losses_in_their_order():
    from pncd.distill.base import BUILTIN, LOSSES, loss_names
    from pncd.distill.options import DEFAULT_WEIGHTS, MODULES

    assert loss_names()[:4] == list(BUILTIN) == list(MODULES) == list(DEFAULT_WEIGHTS)
    assert [LOSSES.meta(n)["uses_features"] for n in MODULES] == [False, True, True, True]


def test_pncd_values_unchanged(one_thread):
    """PNCD's terms for fixed inputs and seeds as the code before the registry computed them
    (hex floats recorded from it on an AVX-512 CPU at one thread), for both PNSCD forms and two
    steps (memory). Bit for bit only holds for that CPU kind and thread count (the order of
    float32 reductions changes with both: 2 threads moved the last bits), so the values must
    agree to 1e-5 relative, far below what any change of a formula, weight or RNG stream moves."""
    from pncd.distill.engine import PNCD, DistillOptions
    from pncd.losses import SegLoss
    from pncd.models import create

    torch.manual_seed(0)
    teacher = create("unet").eval()
    create("enet")  # draws from the RNG as it did when the values were recorded
    x = torch.randn(4, 1, 32, 32)
    y = torch.zeros(4, 32, 32, dtype=torch.long)
    y[:, 8:20, 10:24] = 1
    y[1] = 0
    got = []
    for form in ("infonce", "crd"):
        torch.manual_seed(1)
        s = create("enet")
        p = PNCD(s, teacher, DistillOptions(pnscd_form=form), num_classes=2, channels=1, size=32, n_region_samples=50, seed=3)
        for _ in range(2):
            got.append({k: float(v.detach()).hex() for k, v in p(s, x, y, SegLoss(2), kd_scale=0.5).items()})
    seg = [("0x1.85b9c00000000p+0", "0x1.6d7d4c0000000p-1", "0x1.9df6340000000p-1"),
           ("0x1.83de380000000p+0", "0x1.6d89480000000p-1", "0x1.9a33260000000p-1")]
    kd = [("0x1.2be73c0000000p-2", "0x1.47f2c80000000p+0", "0x1.166f960000000p-6"),
          ("0x1.410c200000000p-2", "0x1.4b68b40000000p+0", "0x1.fb08940000000p-7")]
    pnscd_loss = [("0x1.70d14c0000000p+0", "0x1.acf71c0000000p+0"), ("0x1.ee7c800000000p+0", "0x1.b1c5240000000p+0"),
                  ("0x1.34360e0000000p+1", "0x1.b958720000000p+0"), ("0x1.789fec0000000p+1", "0x1.beb5500000000p+0")]
    want = [dict(zip(("loss_seg", "seg_ce", "seg_dice", "pmd", "rmd", "rd", "pnscd", "loss"), (*seg[i % 2], *kd[i % 2], *pnscd_loss[i])))
            for i in range(4)]
    assert [list(g) for g in got] == [list(w) for w in want]
    for g, w in zip(got, want):
        for k in w:
            assert float.fromhex(g[k]) == pytest.approx(float.fromhex(w[k]), rel=1e-5, abs=1e-7), k


@pytest.mark.slow
def test_toy_loss_distils_through_the_cli(teacher_run, tmp_path):
    """A loss registered from its own file (tests/distill/toy_loss.py) joins the built-in ones
    with ``pncd distill --weight toy=1``: built, logged, weighted into the loss, recorded."""
    out = tmp_path / "toy"
    args = ["distill", "--teacher", str(teacher_run), "--student", "enet", "--out", str(out), *TINY, "--kd-warmup", "0",
            "--weight", "toy=1", "--weight", "rd=0"]
    code = f"import toy_loss, sys; from pncd.cli import main; main({args!r})"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["distill"]["active"] == ["pmd", "rmd", "pnscd", "toy"] and cfg["distill"]["w_toy"] == 1.0
    assert cfg["distill"]["w_rd"] == 0.0
    steps = _rows(out, "step")
    assert len(steps) == 2
    w = {"pmd": 0.1, "rmd": 0.1, "pnscd": 0.1, "toy": 1.0}
    for r in steps:
        assert r["toy"] > 0 and "rd" not in r
        assert r["loss"] == pytest.approx(r["loss_seg"] + sum(w[k] * r[k] for k in w), rel=1e-5)
    # without the file imported, the name is unknown: one line naming the valid losses, exit 2
    p = run_cli(*args[:3], "--student", "enet", "--out", tmp_path / "again", "--weight", "toy=1")
    assert p.returncode == 2 and "toy" in error_line(p) and "pnscd" in error_line(p)
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("args, words", [
    (["--weight", "foo=1"], ["unknown distillation loss foo", "valid: pmd, rmd, rd, pnscd"]),
    (["--weight", "pmd"], ["--weight 'pmd'", "NAME=W"]),
    (["--weight", "pmd=-1"], ["--weight 'pmd=-1'", "W >= 0"]),
    (["--weight", "pmd=0.2", "--weight", "pmd=0.3"], ["pmd is given twice"]),
    (["--w-pmd", "0.2", "--weight", "pmd=0.3"], ["--w-pmd 0.2", "--weight pmd=0.3", "disagree"]),
    (["--modules", "pmd,xyz"], ["unknown distillation loss xyz", "pnscd"]),
])
def test_bad_weights_are_one_line_and_exit_2(tmp_path, args, words):
    p = run_cli("distill", "--teacher", tmp_path, "--student", "enet", "--out", tmp_path / "o", *args)
    line = error_line(p)
    assert p.returncode == 2 and all(w in line for w in words), (p.returncode, line)
    assert not (tmp_path / "o").exists()


def _run_of(*args: str):
    from pncd.commands.distill import distill_command, distill_run

    with distill_command.make_context("distill", ["--teacher", "t", "--student", "enet", "--out", "o", *args]) as ctx:
        return distill_run(ctx, ctx.params)


def test_weight_flags_and_their_aliases_agree():
    """--weight NAME=W, --w-NAME W and --modules describe the same options."""
    from pncd.distill.options import DEFAULT_WEIGHTS

    default = _run_of().distill
    assert default.weights == DEFAULT_WEIGHTS and default.active() == ["pmd", "rmd", "rd", "pnscd"]
    assert _run_of("--weight", "pmd=0.5").distill == _run_of("--w-pmd", "0.5").distill
    assert _run_of("--weight", "pmd=0.5").distill.weight("pmd") == 0.5
    off = _run_of("--weight", "rd=0").distill
    assert off.active() == ["pmd", "rmd", "pnscd"] and off.active() == _run_of("--modules", "pmd,rmd,pnscd").distill.active()
    assert _run_of("--modules", "pmd", "--weight", "rd=0.9").distill.active() == ["pmd", "rd"]  # --weight switches on
    assert _run_of("--modules", "none").distill.active() == []
    paper = _run_of(*(x for k, v in {"pmd": 0.1, "rmd": 0.9, "rd": 0.9, "pnscd": 0.9}.items() for x in ("--weight", f"{k}={v}")))
    assert paper.distill.weights == {"pmd": 0.1, "rmd": 0.9, "rd": 0.9, "pnscd": 0.9}
