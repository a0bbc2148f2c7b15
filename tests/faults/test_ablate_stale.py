"""pncd ablate reuses a row only when it was scored with the same settings: its key (the
teacher checkpoint's SHA-256, student, modules and weights, epochs, seed, split, the
--distill-args) is recorded with its scores, and a rerun with another teacher, epochs, seed,
split or --distill-args runs the row again (its run replaced, as --force would) instead of
labelling the old numbers with the new settings. Its --out is refused as --force would
refuse it: ablation.md is never written into a folder pncd did not write.

The distillations and the scoring are stand-ins (the real ones: tests/distill/test_ablate.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pncd.apps.ablate as ab
import pncd.distill.run
from pncd.commands.ablate import distill_row
from pncd.errors import PncdError
from pncd.io import OWNED_MARKER, owned_kind, write_owned
from tests.faults.fault_helpers import one_error, tree
from tests.helpers import run_cli

ROWS = 6  # the singles grid: none, each module, all four


@pytest.fixture
def teacher(tmp_path) -> Path:
    t = tmp_path / "teacher"
    t.mkdir()
    (t / "config.json").write_text("{}")
    (t / "best.safetensors").write_bytes(b"teacher weights, version 1")
    return t


@pytest.fixture
def calls(monkeypatch):
    """Each distillation started: (row, epochs, seed, lr, resume, force); a finished run is a
    pncd run folder with config.json and last_state.pt. Scores: the row's epochs and seed."""
    started: list[tuple] = []

    def distill(opts):
        out = Path(opts.out)
        started.append((out.name, opts.train.epochs, opts.train.seed, opts.train.lr, opts.resume, opts.force))
        if out.exists() and not opts.resume:
            assert opts.force, f"{out} exists: only --force or --resume may write it"
            assert owned_kind(out) == "run"
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"epochs": opts.train.epochs, "seed": opts.train.seed}))
        (out / "last_state.pt").write_bytes(b"state")
        write_owned(out, ["config.json", "last_state.pt"], "run")

    def score(run, split):
        cfg = json.loads((run / "config.json").read_text())
        return {"run": str(run), "split": split, "parameters": 1, "dice": cfg["epochs"] / 100 + cfg["seed"] / 1000,
                "dice_std": 0.0, "voe": 0.1, "rvd": 0.0, "n_cases": 2}

    monkeypatch.setattr(pncd.distill.run, "distill", distill)
    monkeypatch.setattr(ab, "score_run", score)
    return started


def _ablate(teacher, out, epochs=2, seed=0, split="val", args="--size 32", log=None):
    def row_options(run, mods):
        return distill_row(str(teacher), "enet", run, mods, epochs, seed, args)

    return ab.run_ablation("enet", str(teacher), out, "singles", split, row_options, log=(log or (lambda s: None)))


def test_a_rerun_with_the_same_settings_skips_every_row(teacher, calls, tmp_path):
    out = tmp_path / "abl"
    _ablate(teacher, out)
    assert len(calls) == ROWS and not any(c[4] or c[5] for c in calls)  # new runs: neither resume nor force
    assert owned_kind(out) == "ablation"
    calls.clear()
    lines: list[str] = []
    rows = _ablate(teacher, out, log=lines.append)
    assert calls == [] and sum(ln.startswith("[skip]") for ln in lines) == ROWS
    assert [r["dice"] for r in rows] == [0.02] * ROWS


@pytest.mark.parametrize("change", ["epochs", "seed", "distill-args", "weights", "teacher"])
def test_a_rerun_with_other_settings_runs_every_row_again(teacher, calls, tmp_path, change):
    out = tmp_path / "abl"
    _ablate(teacher, out)
    calls.clear()
    kw = {"epochs": {"epochs": 3}, "seed": {"seed": 5}, "distill-args": {"args": "--size 32 --lr 0.002"},
          "weights": {"args": "--size 32 --weight pmd=0.5"}, "teacher": {}}[change]
    if change == "teacher":
        (teacher / "best.safetensors").write_bytes(b"teacher weights, retrained")
    rows = _ablate(teacher, out, **kw)
    assert len(calls) == ROWS and all(c[5] and not c[4] for c in calls), calls  # replaced, not continued
    table = json.loads((out / "ablation.json").read_text())
    assert table["rows"] == rows
    for r in rows:
        key = json.loads((out / "runs" / r["row"] / "eval.json").read_text())["key"]
        assert key == r["key"]
        assert key["distill"]["epochs"] == kw.get("epochs", 2) and key["distill"]["seed"] == kw.get("seed", 0)
    assert rows[0]["dice"] == pytest.approx(kw.get("epochs", 2) / 100 + kw.get("seed", 0) / 1000)
    if change == "teacher":
        assert table["teacher_sha256"] == rows[0]["key"]["teacher_sha256"]
    calls.clear()
    _ablate(teacher, out, **kw)
    assert calls == []  # and now these settings are the recorded ones


def test_another_split_is_scored_again_without_distilling(teacher, calls, tmp_path):
    out = tmp_path / "abl"
    _ablate(teacher, out, split="val")
    calls.clear()
    rows = _ablate(teacher, out, split="test")
    assert calls == [] and {r["split"] for r in rows} == {"test"}
    assert all(r["key"]["split"] == "test" for r in rows)


def test_an_interrupted_row_continues_only_with_the_same_settings(teacher, calls, tmp_path):
    out = tmp_path / "abl"
    _ablate(teacher, out)
    row = out / "runs" / "pmd"
    (row / "eval.json").unlink()  # killed after its last epoch, before its scores
    calls.clear()
    _ablate(teacher, out)
    assert calls == [("pmd", 2, 0, calls[0][3], True, False)]  # same settings: --resume
    (row / "eval.json").unlink()
    calls.clear()
    _ablate(teacher, out, epochs=4)
    assert calls[1] == ("pmd", 4, 0, calls[1][3], False, True)  # other settings: replaced


def test_ablation_md_is_never_written_into_a_folder_pncd_did_not_write(teacher, calls, tmp_path):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "ablation.md").write_text("my own table")
    before = tree(users)
    with pytest.raises(PncdError, match="not written by pncd"):
        _ablate(teacher, users)
    assert calls == [] and tree(users) == before
    run = tmp_path / "run"  # a run of pncd's, not an ablation
    run.mkdir()
    (run / "config.json").write_text("{}")
    write_owned(run, ["config.json"], "run")
    with pytest.raises(PncdError, match="kind 'run'"):
        _ablate(teacher, run)
    with pytest.raises(PncdError, match="input"):
        _ablate(teacher, teacher)
    assert calls == [] and not (run / "ablation.md").exists() and not (teacher / "ablation.md").exists()


def test_an_ablation_of_an_older_pncd_is_taken_over(teacher, calls, tmp_path):
    out = tmp_path / "old"
    (out / "runs").mkdir(parents=True)
    (out / "ablation.json").write_text(json.dumps({"student": "enet", "teacher": "t", "split": "val", "rows": []}))
    (out / "ablation.md").write_text("# old table\n")
    _ablate(teacher, out)
    assert owned_kind(out) == "ablation" and len(calls) == ROWS
    assert "ablation.md" in json.loads((out / OWNED_MARKER).read_text())["names"]


def test_the_command_line_refuses_a_users_folder_in_one_line(tmp_path):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "ablation.md").write_text("my own table")
    line = one_error(run_cli("ablate", "--teacher", tmp_path / "nope", "--out", users, "--grid", "singles"), 2)
    assert str(users) in line and "not written by pncd" in line
    assert (users / "ablation.md").read_text() == "my own table" and sorted(p.name for p in users.iterdir()) == ["ablation.md"]
