"""The paper's other networks as PNCD teachers: RA-UNet, UNet++, Attention U-Net, PSPNet, FANet,
Swin-UNet.

Fast, in process: each teacher's declared taps feed all four PNCD losses against an ENet
student on real synthetic slices, and the gradients reach the student and the PNSCD heads.
Slow, through the real CLI (about a minute per teacher on a shared 2-core machine):
``pncd train`` a teacher for 2 steps at 64 x 64, then ``pncd distill`` an ENet from it.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from pncd import models
from tests.helpers import run_cli

TEACHERS = ["raunet", "unetpp", "attention_unet", "pspnet", "fanet", "swin_unet"]


@pytest.fixture(scope="module")
def batch(synthetic_root):
    """Two 64 x 64 training slices that contain foreground, with their labels."""
    from pncd.data import DataSpec, load_split

    slices = load_split(DataSpec(root=synthetic_root, size=64), "train")
    masks = torch.from_numpy(slices.masks)
    pick = torch.nonzero(masks.flatten(1).amax(dim=1) > 0).flatten()[:2]
    assert len(pick) == 2, "the synthetic training split should have slices with foreground"
    return torch.from_numpy(slices.images)[pick], masks[pick]


@pytest.mark.parametrize("teacher_name", TEACHERS)
def test_teacher_taps_feed_every_pncd_loss(teacher_name: str, batch) -> None:
    from pncd.distill.pmd import PMDLoss
    from pncd.distill.pnscd import PNSCDLoss
    from pncd.distill.rd import RDLoss
    from pncd.distill.rmd import RMDLoss

    images, labels = batch
    torch.manual_seed(0)
    teacher = models.create(teacher_name, in_channels=1, num_classes=2).eval()
    student = models.create("enet", in_channels=1, num_classes=2).train()
    keys = ("low", "high")
    t_mods = [teacher.taps[k].module for k in keys]
    s_mods = [student.taps[k].module for k in keys]
    with models.FeatureTaps(teacher, t_mods) as tt, models.FeatureTaps(student, s_mods) as st:
        with torch.no_grad():
            t_logits = teacher(images)
        s_logits = student(images)
        t_feats = [tt[m] for m in t_mods]
        s_feats = [st[m] for m in s_mods]
    for k, f in zip(keys, t_feats):
        tap = teacher.taps[k]
        assert f.shape == (2, tap.channels, 64 // tap.stride, 64 // tap.stride), (teacher_name, k)
    pnscd = PNSCDLoss(s_feats[-1].shape[1], t_feats[-1].shape[1], num_classes=2, n_data=100, n_negatives=64)
    losses = {
        "pmd": PMDLoss()(s_logits, t_logits),
        "rmd": RMDLoss()(s_feats, t_feats),
        "rd": RDLoss(num_classes=2)(s_feats, t_feats, labels),
        "pnscd": pnscd(s_feats[-1], t_feats[-1], labels),
    }
    for name, value in losses.items():
        assert torch.isfinite(value), (teacher_name, name)
    assert losses["rmd"] > 0 and losses["pmd"] > 0
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.initial.conv.weight.grad is not None and student.initial.conv.weight.grad.abs().sum() > 0
    assert pnscd.embed_t.weight.grad is not None and pnscd.embed_t.weight.grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize("teacher_name", TEACHERS)
def test_train_teacher_then_distill_enet(teacher_name: str, synthetic_root, tmp_path) -> None:
    teacher_run, student_run = tmp_path / "teacher", tmp_path / "student"
    common = ["--epochs", "1", "--steps-per-epoch", "2", "--workers", "0"]
    p = run_cli("train", "--model", teacher_name, "--size", "64", "--batch", "2", "--data", synthetic_root,
                "--out", teacher_run, *common)
    assert p.returncode == 0, p.stderr[-2000:]
    cfg = json.loads((teacher_run / "config.json").read_text())
    assert cfg["model"]["name"] == teacher_name
    assert cfg["model"]["taps"]["high"]["stride"] == 8

    d = run_cli("distill", "--teacher", teacher_run, "--student", "enet", "--batch", "2", "--out", student_run, *common)
    assert d.returncode == 0, d.stderr[-2000:]
    s_cfg = json.loads((student_run / "config.json").read_text())
    assert s_cfg["model"]["name"] == "enet"
    assert s_cfg["teacher"]["model"] == teacher_name
    assert s_cfg["data"]["size"] == 64  # taken from the teacher's run
    rows = [json.loads(line) for line in (student_run / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r.get("type") == "epoch"]
    assert len(epochs) == 1
    for module in ("pmd", "rmd", "rd", "pnscd"):  # every PNCD module ran on this teacher's taps
        assert math.isfinite(epochs[0][module]), module
    assert epochs[0]["rmd"] > 0 and epochs[0]["pmd"] > 0
    assert (student_run / "best.safetensors").is_file()
