"""Bad input to ``pncd export``: one clear ``Error:`` line, exit status 1, nothing left behind."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from pncd.cli import main

from export_helpers import leftovers


def export_error(capsys, *args: str, code: int = 2) -> str:
    """Run ``pncd export ARGS`` in-process, expect exit status ``code`` (2: bad input, 1: the
    export itself failed); return the one error line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["export", *map(str, args)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert e.value.code == code, err
    assert len(lines) == 1, err
    return lines[0]


def test_invalid_target_precision_lists_valid_pairs(make_run, tmp_path, capsys):
    out = tmp_path / "x"
    msg = export_error(capsys, make_run(), "--target", "openvino", "--precision", "int4", "--out", out)
    assert "no precision 'int4'" in msg and "openvino/int8" in msg and "tensorrt/fp16" in msg
    msg = export_error(capsys, make_run(), "--target", "coreml", "--out", out)
    assert "unknown target 'coreml'" in msg and "onnxruntime/fp32" in msg and "jetson/int8" in msg
    assert leftovers(out) == []


def test_int8_without_train_split(make_run, tmp_path, capsys, synthetic_root):
    """A data set whose splits.json lists no training case, and a --calib-data that is not there."""
    data = tmp_path / "no-train"
    shutil.copytree(synthetic_root, data)
    splits = json.loads((data / "splits.json").read_text())
    (data / "splits.json").write_text(json.dumps({"train": [], "val": splits["val"], "test": splits["test"]}))
    out = tmp_path / "int8"
    msg = export_error(capsys, make_run(), "--target", "onnxruntime", "--precision", "int8",
                       "--calib-data", data, "--out", out)
    assert "INT8 needs calibration images" in msg and str(data) in msg and "--calib-data" in msg
    missing = tmp_path / "nowhere"
    msg = export_error(capsys, make_run(), "--target", "openvino", "--precision", "int8",
                       "--calib-data", missing, "--out", out)
    assert "no train split" in msg and str(missing) in msg
    assert leftovers(out) == []


def test_run_without_checkpoint(make_run, tmp_path, capsys):
    run = make_run("export_tiny", trained=False, checkpoint=False)
    out = tmp_path / "x"
    msg = export_error(capsys, run, "--target", "onnxruntime", "--out", out)
    assert str(run) in msg and "no checkpoint" in msg
    msg = export_error(capsys, tmp_path / "not-a-run", "--target", "onnxruntime", "--out", out)
    assert "not a pncd run" in msg
    assert leftovers(out) == []


def test_operator_without_onnx_translation_is_named(make_run, tmp_path, capsys):
    out = tmp_path / "badop"
    msg = export_error(capsys, make_run("export_badop", trained=False), "--target", "onnxruntime", "--out", out, code=1)
    assert "operator pncdtest.wobble.default" in msg
    assert "module 'head.1' (Wobble)" in msg
    assert "BadOpSeg" in msg
    assert leftovers(out) == []


def test_existing_output_is_refused_without_force(make_run, tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    msg = export_error(capsys, make_run(), "--target", "onnxruntime", "--out", out)
    assert str(out) in msg and "--force" in msg
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob(".exists.*"))


def test_fp16_parity_failure_writes_nothing(make_run, tmp_path, capsys):
    """Logits near 1000 whose class margin (< 0.2) is below FP16's step there (0.5): argmax lost."""
    out = tmp_path / "margin"
    msg = export_error(capsys, make_run("export_margin", trained=False), "--target", "onnxruntime",
                       "--precision", "fp16", "--out", out, code=1)
    assert "(fp16) agrees with torch on" in msg and "below the required 99.90%" in msg and "nothing was written" in msg
    assert leftovers(out) == []


def test_missing_runtime_names_the_package(make_run, tmp_path, capsys, monkeypatch):
    """OpenVINO made unimportable (sys.modules entry None, what Python does for a missing package)."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    out = tmp_path / "ov"
    msg = export_error(capsys, make_run(), "--target", "openvino", "--out", out, code=1)
    assert "openvino is not installed" in msg and "pip install 'openvino'" in msg
    monkeypatch.undo()  # OpenVINO back; now only NNCF (OpenVINO's INT8 quantizer) is missing
    monkeypatch.setitem(sys.modules, "nncf", None)
    msg = export_error(capsys, make_run(), "--target", "openvino", "--precision", "int8", "--out", out, code=1)
    assert "nncf is not installed" in msg and "pip install 'nncf'" in msg
    assert leftovers(out) == []


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--target", "onnxruntime", "--accuracy-control"], "--accuracy-control applies to --target openvino --precision int8"),
        (["--target", "onnxruntime", "--input-size", "30x30"], "divisible by 16"),
        (["--target", "onnxruntime", "--input-size", "big"], "is not HxW"),
        (["--target", "onnxruntime", "--precision", "int8", "--calib-method", "kl"], "--calib-method 'kl' is unknown"),
        (["--target", "onnxruntime", "--precision", "int8", "--calib-size", "0"], "'--calib-size': 0 is not in the range x>=1"),
        (["--target", "onnxruntime", "--precision", "int8", "--keep-float", "middle"], "--keep-float 'middle' is unknown"),
        (["--target", "openvino", "--precision", "int8", "--accuracy-control", "--max-dice-drop", "2"], "--max-dice-drop 2.0 is invalid"),
        (["--target", "openvino", "--precision", "int8", "--accuracy-control", "--ac-images", "-1"], "--ac-images -1 is invalid"),
        (["--target", "onnxruntime", "--precision", "int8", "--ov-preset", "mixed"], "--ov-preset applies to --target openvino --precision int8"),
        (["--target", "onnxruntime", "--precision", "int8", "--ov-rounding", "gptq"], "--ov-rounding applies to --target openvino --precision int8"),
        (["--target", "openvino", "--precision", "int8", "--accuracy-control", "--ov-rounding", "gptq"],
         "--ov-rounding gptq does not go with --accuracy-control"),
    ],
)
def test_bad_options(make_run, tmp_path, capsys, args, expected):
    out = tmp_path / "opt"
    msg = export_error(capsys, make_run(), *args, "--out", out)
    assert expected in msg
    assert leftovers(out) == []


def test_cli_exit_status_in_a_subprocess(tmp_path):
    """The installed entry point: exit status 2 (bad input) and one line for a bad pair (no run needed)."""
    from tests.helpers import error_line, run_cli

    p = run_cli("export", tmp_path / "run", "--target", "tensorrt", "--precision", "int2", "--out", tmp_path / "o")
    assert p.returncode == 2
    assert error_line(p).startswith("Error: target 'tensorrt' has no precision 'int2'; valid target/precision pairs:")
    assert not (tmp_path / "o").exists()
