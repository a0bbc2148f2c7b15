"""Patient-level k-fold splits: ``pncd data split`` and ``--fold`` on a real data set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pncd.cli import main
from pncd.data import DataSpec, load_split
from pncd.data.folds import make_folds, read_folds
from pncd.errors import PncdError


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_every_case_is_held_out_once_and_never_in_two_splits():
    ids = [f"p{i}" for i in range(23)]
    burden = {c: (i % 7) * 100 for i, c in enumerate(ids)}
    folds = make_folds(ids, burden, k=5, seed=3, val_fraction=0.2)
    held = [c for f in folds for c in f["test"]]
    assert sorted(held) == sorted(ids)
    assert max(len(f["test"]) for f in folds) - min(len(f["test"]) for f in folds) <= 1
    for f in folds:
        assert not set(f["train"]) & set(f["val"]) and not set(f["train"]) & set(f["test"]) and not set(f["val"]) & set(f["test"])
        assert sorted(f["train"] + f["val"] + f["test"]) == sorted(ids) and f["val"]
    assert make_folds(ids, burden, 5, 3, 0.2) == folds  # same seed, same folds
    assert make_folds(ids, burden, 5, 4, 0.2) != folds


def test_folds_are_stratified_by_lesion_burden():
    ids = [f"p{i}" for i in range(40)]
    burden = {c: (0 if i < 20 else 10_000 + i) for i, c in enumerate(ids)}  # half without lesion
    for f in make_folds(ids, burden, k=4, seed=0, val_fraction=0.15):
        assert sum(burden[c] > 0 for c in f["test"]) == 5  # 20 lesion cases over 4 folds


def test_too_many_folds_is_a_clear_error():
    with pytest.raises(PncdError, match="too few for 5 folds"):
        make_folds(["a", "b", "c"], {}, 5, 0, 0.15)


def test_split_command_writes_both_formats_and_train_reads_a_fold(synthetic_root, tmp_path, capsys):
    pncd_file, nn_file = tmp_path / "folds.json", tmp_path / "splits_final.json"
    code, out, _ = _run(["data", "split", str(synthetic_root), "--folds", "4", "--out", str(pncd_file)], capsys)
    assert code == 0 and "fold 3:" in out
    code, _, _ = _run(["data", "split", str(synthetic_root), "--folds", "4", "--nnunet", "--out", str(nn_file)], capsys)
    assert code == 0
    ours, nn = json.loads(pncd_file.read_text()), json.loads(nn_file.read_text())
    assert ours["k"] == 4 and len(nn) == 4
    for f, g in zip(ours["folds"], nn):
        assert sorted(g["val"]) == sorted(f["test"]) and sorted(g["train"]) == sorted(f["train"] + f["val"])
    # read back as pncd folds, nnU-Net's held-out fold is the test split, and val is drawn from its train
    for f in read_folds(nn_file):
        assert not set(f["val"]) & set(f["test"]) and f["val"]
    # a fold chosen in the data layer: test = exactly the fold's held-out cases
    spec = DataSpec(root=str(synthetic_root), size=32, fold=2, folds_file=str(pncd_file))
    assert sorted(load_split(spec, "test").cases()) == sorted(ours["folds"][2]["test"])
    assert sorted(load_split(spec, "train").cases()) == sorted(ours["folds"][2]["train"])
    # refuses to replace what is not a folds file, even with --force
    (tmp_path / "notes.json").write_text('{"a": 1}')
    code, _, err = _run(["data", "split", str(synthetic_root), "--out", str(tmp_path / "notes.json"), "--force"], capsys)
    assert code == 2 and "is not a folds file" in err and json.loads((tmp_path / "notes.json").read_text()) == {"a": 1}


def test_a_missing_fold_names_the_file(synthetic_root, tmp_path, capsys):
    f = tmp_path / "folds.json"
    assert _run(["data", "split", str(synthetic_root), "--folds", "2", "--out", str(f)], capsys)[0] == 0
    with pytest.raises(PncdError, match=r"folds.json: --fold 5 does not exist; it holds folds 0..1"):
        load_split(DataSpec(root=str(synthetic_root), size=32, fold=5, folds_file=str(f)), "test")
    with pytest.raises(PncdError, match="no folds.json or splits_final.json beside the data"):
        load_split(DataSpec(root=str(synthetic_root), size=32, fold=0), "test")
