"""``pncd compare``: the paired statistics and verdict (unit), and the command on the synthetic
data with small settings, killed with SIGKILL after its first job and run again (end to end)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pncd.apps.compare_report import compare_arm, summarize, verdict


def _scores(name, fold, dice):
    return {"name": name, "fold": fold, "dice": dice}


def test_verdict_follows_the_interval():
    assert verdict(0.001, 0.02) == "helped"
    assert verdict(-0.02, -0.001) == "hurt"
    assert verdict(-0.01, 0.01) == "no measurable effect"
    assert verdict(None, None) == "not measured"


def test_paired_difference_gap_and_per_fold():
    rng = np.random.default_rng(0)
    cases = [f"p{i}" for i in range(40)]
    alone = {c: float(v) for c, v in zip(cases, rng.uniform(0.5, 0.8, 40))}
    teacher = {c: v + 0.10 for c, v in alone.items()}
    helped = {c: v + 0.05 + float(rng.normal(0, 0.005)) for c, v in alone.items()}
    fold = {c: i % 4 for i, c in enumerate(cases)}
    r = compare_arm(teacher, alone, helped, fold)
    assert r["n_patients"] == 40 and r["verdict"] == "helped"
    assert 0.045 < r["diff_mean"] < 0.055 and r["ci"][0] > 0
    assert r["gap_closed"] == pytest.approx(0.5, abs=0.06)
    assert r["wilcoxon_p"] < 1e-6
    assert [f["fold"] for f in r["per_fold"]] == [0, 1, 2, 3] and sum(f["n"] for f in r["per_fold"]) == 40
    same = compare_arm(teacher, alone, dict(alone), fold)
    assert same["verdict"] == "no measurable effect" and same["wilcoxon_p"] == 1.0 and same["diff_mean"] == 0.0
    worse = compare_arm(teacher, alone, {c: v - 0.03 for c, v in alone.items()}, fold)
    assert worse["verdict"] == "hurt" and worse["gap_closed"] == pytest.approx(-0.3)


def test_summary_pairs_patients_over_folds():
    results = [_scores("teacher", 0, {"a": 0.9, "b": 0.8}), _scores("teacher", 1, {"c": 0.7}),
               _scores("enet-alone", 0, {"a": 0.6, "b": 0.5}), _scores("enet-alone", 1, {"c": 0.4}),
               _scores("enet-pncd", 0, {"a": 0.7, "b": 0.6}), _scores("enet-pncd", 1, {"c": 0.5})]
    s = summarize(results, ["enet"], ["alone", "pncd"])
    r = s["students"]["enet"]["pncd"]
    assert r["n_patients"] == 3 and r["diff_mean"] == pytest.approx(0.1)
    assert r["patients"]["c"] == {"fold": 1, "alone": 0.4, "arm": 0.5, "teacher": 0.7}
    assert s["teacher"]["n_patients"] == 3 and s["verdicts"][0].startswith("enet + pncd vs enet alone: ")


def _compare(data: Path, folds: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pncd.cli", "compare", "--teacher", "unet", "--student", "enet", "--data", str(data),
            "--folds-file", str(folds), "--folds", "0", "--size", "32", "--epochs", "1", "--steps-per-epoch", "2",
            "--teacher-epochs", "1", "--batch", "4", "--out", str(out)]


def test_compare_runs_resumes_after_a_kill_and_reports(synthetic_root, tmp_path):
    folds = tmp_path / "folds.json"
    subprocess.run([sys.executable, "-m", "pncd.cli", "data", "split", str(synthetic_root), "--folds", "2",
                    "--out", str(folds)], check=True, capture_output=True)
    out = tmp_path / "cmp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_compare(synthetic_root, folds, out), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 600
    while not (out / "f0" / "teacher" / "scores.json").is_file():  # the first job finished
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the comparison and its running child job
    proc.wait()
    teacher_scores = (out / "f0" / "teacher" / "scores.json").read_text()

    done = subprocess.run(_compare(synthetic_root, folds, out), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[start] fold 0 teacher" not in done.stdout  # reused, not trained again
    assert (out / "f0" / "teacher" / "scores.json").read_text() == teacher_scores
    summary = json.loads((out / "compare.json").read_text())
    r = summary["students"]["enet"]["pncd"]
    held_out = json.loads(folds.read_text())["folds"][0]["test"]
    assert sorted(r["patients"]) == sorted(held_out)  # every held-out patient of the fold, once
    lo, hi = r["ci"]
    assert r["verdict"] == verdict(lo, hi) and r["verdict"] in done.stdout
    md = (out / "compare.md").read_text()
    assert "| enet | pncd |" in md and md.rstrip().endswith("**")
    assert (out / "compare.png").stat().st_size > 1000


def test_a_reused_teacher_is_not_written_into(tmp_path):
    """Scores of a fold teacher given as a path go to the comparison's folder, not into that run."""
    from pncd.apps.compare import Job, Plan, scores_path

    reused = Plan(data="d", folds_file="f", folds=[0], students=["enet"], arms=["alone", "pncd"],
                  teacher=str(tmp_path / "t{fold}"), out=tmp_path / "cmp")
    job = reused.jobs()[0]
    assert job.name == "teacher" and job.out == tmp_path / "t0"
    assert scores_path(reused, job) == tmp_path / "cmp" / "f0" / "teacher.scores.json"
    trained = Plan(data="d", folds_file="f", folds=[0], students=["enet"], arms=["alone"], teacher="unet",
                   out=tmp_path / "cmp")
    assert scores_path(trained, trained.jobs()[0]) == tmp_path / "cmp" / "f0" / "teacher" / "scores.json"
    assert isinstance(trained.jobs()[1], Job) and trained.jobs()[1].name == "enet-alone"
