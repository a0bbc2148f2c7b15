"""NaN/Inf in images is found where images are read (data check, train, eval), and the
non-finite-loss message names a checkpoint that exists, or says there is none."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from tests.faults.fault_helpers import TINY, ok, one_error, siblings, tree
from tests.helpers import run_cli


def _poison(root: Path, case: str, value: float) -> Path:
    import nibabel as nib

    path = root / "images" / f"{case}.nii.gz"
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[..., 1] = value  # one slice
    out = nib.Nifti1Image(arr, img.affine)
    out.header.set_data_dtype(np.float32)
    nib.save(out, str(path))
    return path


def _data_with(tiny_data: Path, tmp_path: Path, split: str, value: float) -> tuple[Path, Path]:
    root = tmp_path / f"data-{split}"
    shutil.copytree(tiny_data, root)
    case = json.loads((root / "splits.json").read_text())[split][0]
    return root, _poison(root, case, value)


def test_data_check_lists_nan_and_inf_volumes(tiny_data, tmp_path):
    root, nan_file = _data_with(tiny_data, tmp_path, "train", float("nan"))
    inf_file = _poison(root, json.loads((root / "splits.json").read_text())["test"][0], float("inf"))
    p = run_cli("data", "check", root)
    assert p.returncode == 1
    assert re.search(r"problems\s+2 error", p.stdout), p.stdout
    for f in (nan_file, inf_file):
        assert f.name in p.stdout and "NaN or infinite" in p.stdout
    assert "problems      none" not in p.stdout


def test_train_refuses_nan_images_naming_the_file(tiny_data, tmp_path):
    root, bad = _data_with(tiny_data, tmp_path, "train", float("nan"))
    out = tmp_path / "run"
    line = one_error(run_cli("train", "--model", "enet", "--data", root, "--out", out, "--epochs", "1", *TINY), 2)
    assert str(bad) in line and "NaN or infinite" in line
    assert not out.exists() and siblings(out) == []


def test_eval_refuses_nan_images_instead_of_scoring_them(tiny_run, tiny_data, tmp_path):
    root, bad = _data_with(tiny_data, tmp_path, "test", float("nan"))
    out = tmp_path / "ev"
    line = one_error(run_cli("eval", tiny_run, "--data", root, "--split", "test", "--out", out), 2)
    assert str(bad) in line and "NaN or infinite" in line
    assert not out.exists() and siblings(out) == []


def test_nan_loss_message_names_an_existing_checkpoint_or_none(tiny_data, tmp_path):
    out = tmp_path / "run"
    p = run_cli("train", "--model", "enet", "--data", tiny_data, "--out", out, "--epochs", "2", "--lr", "1e30", *TINY)
    line = one_error(p, 1)
    assert line.startswith("Error: non-finite loss")
    named = re.findall(r"checkpoint is (\S+)", line)
    if named:
        assert Path(named[0]).is_file()
    else:
        assert "no checkpoint was written yet" in line and not (out / "last.safetensors").exists()


def test_nan_loss_under_force_keeps_the_previous_run(tiny_run, tiny_data, copy_of):
    run = copy_of(tiny_run)
    before = tree(run)
    p = run_cli("train", "--model", "enet", "--data", tiny_data, "--out", run, "--force", "--epochs", "1", "--lr", "1e30", *TINY)
    line = one_error(p, 1)
    assert "non-finite loss" in line and f"{run} still holds the previous run" in line
    assert tree(run) == before and siblings(run) == []
