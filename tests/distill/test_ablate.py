"""``pncd ablate``: each row a typed distillation (pncd.distill.run.distill), scored and tabled."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli

TINY = "--size 32 --batch 4 --steps-per-epoch 1 --no-check-teacher --threads 1"


@pytest.fixture(scope="module")
def teacher_run(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "enet"
    p = run_cli("train", "--model", "enet", "--data", synthetic_root, "--out", out, "--size", "32", "--batch", "4",
                "--epochs", "1", "--steps-per-epoch", "2")
    assert p.returncode == 0, p.stderr
    return out


def test_row_options_parse_distill_flags_and_the_row_wins(tmp_path):
    from pncd.commands.ablate import distill_row as row_options

    run = row_options("t", "enet", tmp_path / "rd", ("pmd", "rd"), 3, 7, "--size 32 --weight pmd=0.5 --epochs 9 --lr 2e-3")
    assert (run.teacher, run.student, run.out, run.train.epochs, run.train.seed) == ("t", "enet", str(tmp_path / "rd"), 3, 7)
    assert run.distill.active() == ["pmd", "rd"] and run.distill.weight("pmd") == 0.5 and run.train.lr == 2e-3
    assert run.data.size == 32 and run.data.num_classes is None  # the rest comes from the teacher
    assert not run.resume and not run.force
    assert row_options("t", "enet", tmp_path / "none", (), 1, 0, "").distill.active() == []


def test_ablate_singles_grid_writes_every_row_and_resumes(teacher_run, tmp_path):
    out = tmp_path / "abl"
    args = ["ablate", "--teacher", teacher_run, "--student", "enet", "--out", out, "--grid", "singles", "--epochs", "1",
            "--split", "val", "--distill-args", TINY]
    p = run_cli(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    table = json.loads((out / "ablation.json").read_text())
    names = [r["row"] for r in table["rows"]]
    assert names == ["student-alone", "pmd", "rmd", "rd", "pnscd", "pmd+rmd+rd+pnscd"]
    for r in table["rows"]:
        cfg = json.loads((out / "runs" / r["row"] / "config.json").read_text())
        assert cfg["distill"]["active"] == r["modules"] and cfg["options"]["epochs"] == 1
        assert 0.0 <= r["dice"] <= 1.0
    again = run_cli(*args)
    assert again.returncode == 0 and again.stdout.count("[skip]") == 6
