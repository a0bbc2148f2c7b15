"""``pncd data check`` and ``pncd data synth`` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pncd.cli import main


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_check_good_data(synthetic_root, tmp_path, capsys):
    code, out, _ = _run(["data", "check", str(synthetic_root), "--json", str(tmp_path / "r.json")], capsys)
    assert code == 0
    assert "cases         8 (8 readable)" in out and "slices        48" in out and "problems      none" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] and report["cases"] == 8 and report["slices"] == 48
    assert report["image_sizes"] == {"64x64": 48} and report["channels"] == {"1": 8}
    assert report["splits"]["train"]["cases"] == 6 and report["split_source"] == "splits.json"
    assert sum(report["class_pixel_fraction"].values()) == pytest.approx(1.0)
    assert 0 < report["class_pixel_fraction"]["1"] < 0.1
    assert report["empty_slices"] + report["foreground_slices"] == 48


def test_check_bad_data_exits_nonzero_and_names_the_file(png_dataset, tmp_path, capsys):
    root = png_dataset(n=3)
    (root / "labels/img2.png").write_bytes(b"garbage")
    out_json = tmp_path / "out.json"
    code, out, err = _run(["data", "check", str(root), "--json", str(out_json)], capsys)
    assert code == 1
    assert "labels/img2.png: cannot be read as an image" in out
    assert err.startswith("Error: ") and "1 error(s) found" in err
    report = json.loads(out_json.read_text())  # written whole, with the problem in it
    assert not report["ok"] and report["problems"][0]["file"].endswith("labels/img2.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "png"]  # no temporary left


def test_check_missing_directory_writes_no_json(tmp_path, capsys):
    out_json = tmp_path / "out.json"
    code, _, err = _run(["data", "check", str(tmp_path / "absent"), "--json", str(out_json)], capsys)
    assert code == 2 and "absent: data set directory not found" in err
    assert list(tmp_path.iterdir()) == []


def test_check_with_config_file(png_dataset, tmp_path, capsys):
    root = png_dataset(n=3)
    (tmp_path / "c.toml").write_text("num_classes = 3\n")
    code, out, _ = _run(["data", "check", str(root), "--config", str(tmp_path / "c.toml")], capsys)
    assert code == 0 and "classes       3 (from option)" in out


def test_synth_command(tmp_path, capsys):
    code, out, _ = _run(["data", "synth", str(tmp_path / "s"), "--cases", "3", "--slices", "2", "--size", "32"], capsys)
    assert code == 0 and "wrote 3 cases x 2 slices at 32x32" in out
    assert len(list((tmp_path / "s/labels").glob("*.nii.gz"))) == 3
    code, _, err = _run(["data", "synth", str(tmp_path / "s"), "--cases", "3"], capsys)
    assert code == 2 and "already exists" in err


def test_help_has_examples(capsys):
    for cmd in (["data"], ["data", "check"], ["data", "synth"]):
        code, out, _ = _run([*cmd, "--help"], capsys)
        assert code == 0 and "Example" in out and "pncd data" in out


def test_exit_status_in_a_real_process(png_dataset):
    root = png_dataset(n=2)
    (root / "images/img0.png").unlink()
    proc = subprocess.run([sys.executable, "-m", "pncd.cli", "data", "check", str(root)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "img0.png: mask without image" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: ")


LGG = Path("/work/shared/data/lgg-flair")


@pytest.mark.skipif(not LGG.is_dir(), reason="LGG FLAIR data set not present at /work/shared/data/lgg-flair")
def test_lgg_val_split():
    from pncd.data import DataSpec, load_split

    s = load_split(DataSpec(root=str(LGG), size=64), "val")
    assert len(s.cases()) == 9 and len(s) == 338
    assert int(s.lesion_mask().sum()) == 114  # README: 114 val slices with tumour
    assert s.images.shape == (338, 1, 64, 64) and set(s.masks.ravel().tolist()) == {0, 1}
