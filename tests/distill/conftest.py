"""Fixtures of the distillation tests."""

from __future__ import annotations

import os
import sys

import pytest


@pytest.fixture
def user_teacher(tmp_path):
    """The teacher of ``user_teacher.py`` (a network pncd does not know) saved, seeded, to
    ``tmp_path/teacher.pt``: (weights, env under which ``--teacher user_teacher:build`` imports
    it in a child process, the ``--taps`` arguments pairing ENet's taps with its modules)."""
    import torch

    from pncd.models import create

    here = os.path.dirname(__file__)
    sys.path.insert(0, here)
    try:
        from user_teacher import build
    finally:
        sys.path.pop(0)
    weights = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    torch.save(build().state_dict(), weights)
    env = {"PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", "")}
    student = create("enet")
    low, high = student.taps["low"].module, student.taps["high"].module
    return weights, env, ["--taps", f"{low}=stem", "--taps", f"{high}=deep"]


@pytest.fixture
def eval_net_with_bn_stats():
    """``make(name)``: a registry network in eval mode, seeded, its BatchNorms given non-trivial
    statistics and affine parameters, as after training (folding them must then matter)."""
    import torch

    from pncd.models import create

    def make(name: str):
        torch.manual_seed(0)
        net = create(name).eval()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        return net

    return make
