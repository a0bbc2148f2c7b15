"""A data set whose val split is empty: ``pncd data check`` and ``pncd train`` apply one rule
(pncd.data.splits.empty_split): data check fails naming the split's file, train refuses with
the same words."""

from __future__ import annotations

import json
import shutil

from tests.faults.fault_helpers import TINY, one_error, siblings
from tests.helpers import run_cli


def test_empty_val_in_splits_json_fails_data_check_and_train_alike(tiny_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    splits = json.loads((root / "splits.json").read_text())
    splits["train"] += splits["val"]
    splits["val"] = []
    (root / "splits.json").write_text(json.dumps(splits))
    rule = f"{root / 'splits.json'}: split 'val' has no cases; list some in it"

    p = run_cli("data", "check", root)
    assert p.returncode == 1, p.stdout
    assert f"error   {rule} (pncd train and distill need it)" in p.stdout, p.stdout
    assert "1 error(s) found" in p.stderr

    out = tmp_path / "run"
    line = one_error(run_cli("train", "--model", "enet", "--data", root, "--out", out, "--epochs", "1", *TINY), 2)
    assert line == f"Error: {rule}"
    assert not out.exists() and siblings(out) == []


def test_too_few_cases_for_a_seeded_split(tiny_data, tmp_path):
    """Without splits.json, two cases give no val case (a seeded split needs three)."""
    root = tmp_path / "two"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for case in sorted(p.name for p in (tiny_data / "images").iterdir())[:2]:
        for sub in ("images", "labels"):
            shutil.copyfile(tiny_data / sub / case, root / sub / case)
    p = run_cli("data", "check", root)
    assert p.returncode == 1 and f"error   {root}: split 'val' has no cases (from seed 0" in p.stdout, p.stdout
    assert f"warning {root}: split 'test' has no cases" in p.stdout
    line = one_error(run_cli("train", "--model", "enet", "--data", root, "--out", tmp_path / "run", "--epochs", "1",
                             *TINY), 2)
    assert f"{root}: split 'val' has no cases (from seed 0" in line and "add cases or write a splits.json" in line


def test_a_complete_data_set_still_passes(tiny_data):
    p = run_cli("data", "check", tiny_data)
    assert p.returncode == 0 and "problems      none" in p.stdout, p.stdout
