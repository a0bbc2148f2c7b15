"""pncd distill end to end on the synthetic phantoms (tiny sizes, real CLI in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import error_line, run_cli

TINY = ["--size", "32", "--batch", "4", "--steps-per-epoch", "4"]


@pytest.fixture(scope="module")
def teacher_run(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "unet"
    p = run_cli("train", "--model", "unet", "--data", synthetic_root, "--epochs", "3", "--out", out, *TINY, "--lr", "3e-3")
    assert p.returncode == 0, p.stderr
    return out


def _epochs(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if json.loads(x)["type"] == "epoch"]


# PMD in the first tier; the other three, each a distillation run of its own, in the second (-m slow)
@pytest.mark.parametrize("module", ["pmd", *(pytest.param(m, marks=pytest.mark.slow) for m in ("rmd", "rd", "pnscd"))])
def test_distilling_lowers_each_distillation_loss(teacher_run, tmp_path, module):
    """Each module, trained on its own term (+ Loss_seg), lowers that term over a short run.

    With all four at the paper's weights, a 20-step run at 32x32 lowers PMD, RMD and PNSCD but
    not always RD (it rose from 0.09 to 0.17 in one such run while the others fell), so each
    term is checked where it is the one being optimised.

    PNSCD is compared step by step (mean over the steps that score anything, first half against
    second half): at 32x32 the high tap is 4x4, where a lesion often vanishes and the step then
    scores 0, so its epoch means follow which batches kept a lesion (one run: 0.43, 1.16, 0.21,
    0.03, 0.60 while its non-zero steps fell from about 1.7 to 0.1).
    """
    out = tmp_path / module
    extra = ["--lesion-fraction", "1", "--log-every", "1"] if module == "pnscd" else []
    p = run_cli("distill", "--teacher", teacher_run, "--student", "enet", "--epochs", "5", "--batch", "4",
                "--steps-per-epoch", "4", "--out", out, "--lr", "3e-3", "--modules", module, *extra)
    assert p.returncode == 0, p.stderr
    rows = _epochs(out)
    if module != "pnscd":
        assert rows[-1][module] < rows[0][module], (module, [r[module] for r in rows])
        return
    steps = [json.loads(x)[module] for x in (out / "log.jsonl").read_text().splitlines() if json.loads(x)["type"] == "step"]
    assert len(steps) == 20
    first, second = [v for v in steps[:10] if v > 0], [v for v in steps[10:] if v > 0]
    assert first and second and sum(second) / len(second) < 0.5 * sum(first) / len(first), steps


@pytest.mark.slow
def test_distill_run_is_a_plain_student(teacher_run, tmp_path):
    out = tmp_path / "enet"
    # data options come from the teacher run (no --data / --size given for them)
    p = run_cli("distill", "--teacher", teacher_run, "--student", "enet", "--epochs", "2", "--batch", "4",
                "--steps-per-epoch", "3", "--out", out)
    assert p.returncode == 0, p.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "distill" and cfg["data"]["size"] == 32
    assert cfg["distill"]["active"] == ["pmd", "rmd", "rd", "pnscd"]
    assert cfg["distill"]["taps"][1] == [cfg["model"]["taps"]["high"]["module"], json.loads(
        (teacher_run / "config.json").read_text())["model"]["taps"]["high"]["module"]]
    rows = _epochs(out)
    assert all(k in rows[-1] for k in ("pmd", "rmd", "rd", "pnscd", "loss_seg", "loss"))
    # the saved student is a plain pncd.models checkpoint: no heads, no memory
    keys = load_file(str(out / "best.safetensors")).keys()
    assert not any("embed" in k or "memory" in k for k in keys)
    from pncd.checkpoint import load_model

    model, _ = load_model(out)
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_module_subset_costs_nothing_else(teacher_run, tmp_path):
    out = tmp_path / "pmd-only"
    p = run_cli("distill", "--teacher", teacher_run, "--student", "enet", "--epochs", "1", "--out", out, "--modules", "pmd",
                "--batch", "4", "--steps-per-epoch", "2")
    assert p.returncode == 0, p.stderr
    row = _epochs(out)[0]
    assert "pmd" in row and not {"rmd", "rd", "pnscd"} & row.keys()

    from pncd.data import DataSpec
    from pncd.distill.engine import DistillOptions, DistillTrainer
    from pncd.checkpoint import load_model
    from pncd.models import create
    from pncd.training.run import TrainOptions

    teacher, cfg = load_model(teacher_run)
    spec = DataSpec.from_dict(cfg["data"])
    tr = DistillTrainer(create("enet"), teacher, DistillOptions(modules=("pmd",)), {}, spec,
                        TrainOptions(epochs=1, batch=4, steps_per_epoch=1, device="cpu"), tmp_path / "x")
    assert tr.pncd.s_hooks is None and tr.pncd.t_hooks is None and list(tr.losses) == ["pmd"]
    assert not any(m._forward_hooks for m in tr.raw_model.modules())


@pytest.mark.slow
def test_user_factory_teacher_with_taps(synthetic_root, tmp_path, user_teacher):
    """A network pncd does not know, tapped by module path through forward hooks."""
    weights, env, taps = user_teacher
    out = tmp_path / "enet"
    p = run_cli("distill", "--teacher", "user_teacher:build", "--teacher-weights", weights, "--student", "enet",
                "--data", synthetic_root, *taps, "--epochs", "1", "--out", out, *TINY, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "config.json").read_text())["distill"]["taps"] == [[taps[1].split("=")[0], "stem"],
                                                                              [taps[3].split("=")[0], "deep"]]

    bad = run_cli("distill", "--teacher", "user_teacher:build", "--teacher-weights", weights, "--student", "enet",
                  "--data", synthetic_root, "--epochs", "1", "--out", tmp_path / "no-taps", *TINY, env=env)
    assert bad.returncode == 2 and "--taps" in error_line(bad)
    assert not (tmp_path / "no-taps").exists() or not any((tmp_path / "no-taps").iterdir())


def test_unknown_module_and_missing_teacher(tmp_path):
    p = run_cli("distill", "--teacher", tmp_path / "nope", "--student", "enet", "--out", tmp_path / "o")
    assert p.returncode == 2 and "nope" in error_line(p)
    p = run_cli("distill", "--teacher", tmp_path, "--student", "enet", "--out", tmp_path / "o", "--modules", "pmd,xyz")
    assert p.returncode == 2 and "xyz" in error_line(p) and "pnscd" in error_line(p)


def test_distill_ddp_two_cpu_processes(teacher_run, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "pncd.cli",
           "distill", "--teacher", str(teacher_run), "--student", "enet", "--epochs", "2", "--out", str(out), "--device", "cpu",
           "--batch", "4", "--steps-per-epoch", "2"]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _epochs(out)
    assert [r["epoch"] for r in rows] == [0, 1] and all("pnscd" in r for r in rows)
    state = torch.load(out / "last_state.pt", weights_only=True)
    # memory filled from both ranks: 2 epochs x 2 steps x 2 ranks x 4 images with background
    assert int(state["extra"]["losses"]["pnscd.mem_count"][0]) == 32


@pytest.mark.parametrize("name", ["dcsaunet", "unet"])
def test_prepared_teacher_matches_the_plain_network(name, eval_net_with_bn_stats):
    """The frozen teacher runs with Conv+BN folded and in channels_last; its logits and tapped
    features must equal the plain eval-mode network's (to float rounding), and hooks on module
    paths must still fire."""
    from pncd.distill.engine import fuse_conv_bn, prepare_teacher
    from pncd.models import FeatureTaps

    net = eval_net_with_bn_stats(name)
    x = torch.randn(2, 1, 32, 32)
    taps = [net.taps["low"].module, net.taps["high"].module]
    with FeatureTaps(net, taps) as h, torch.no_grad():
        ref = net(x)
        ref_feats = [h[t].clone() for t in taps]
    import copy

    fast = prepare_teacher(copy.deepcopy(net), "cpu")
    assert fuse_conv_bn(fast) == 0, "a second pass must find nothing left to fold"
    assert all(not p.requires_grad for p in fast.parameters()) and not fast.training
    with FeatureTaps(fast, taps) as h, torch.no_grad():
        out = fast(x.contiguous(memory_format=torch.channels_last))
        feats = [h[t] for t in taps]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for a, b in zip(feats, ref_feats):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    n_bn_before = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    n_bn_after = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert n_bn_after < n_bn_before  # something was folded
