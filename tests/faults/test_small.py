"""Artifact SHA-256 checked by bench (--no-verify recorded), data synth permissions,
all-background data sets warned about, --host/--ssh-option/--calib-data refused before any data
is loaded, the same exit status for a missing run in eval and export, strict host keys on -J."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import numpy as np

from tests.faults.fault_helpers import TINY, ok, one_error, siblings
from tests.helpers import run_cli

FAST_BENCH = ["--iters", "1", "--warmup", "0", "--n-boot", "100", "--overlays", "0", "--batch", "1", "--no-reference"]


def test_bench_refuses_an_artifact_whose_sha256_differs(tiny_export, copy_of, tmp_path):
    art = copy_of(tiny_export)
    onnx = art / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-8] + b"\0" * 8)  # swapped/damaged, same size
    out = tmp_path / "rep"
    line = one_error(run_cli("bench", art, "--out", out, *FAST_BENCH), 2)
    assert "model.onnx" in line and "SHA-256" in line and "--no-verify" in line
    assert not out.exists() and siblings(out) == []


def test_bench_records_whether_it_verified(tiny_export, tmp_path):
    ok(run_cli("bench", tiny_export, "--out", tmp_path / "a", *FAST_BENCH))
    assert json.loads((tmp_path / "a" / "report.json").read_text())["artifacts_verified"].startswith("sha256")
    ok(run_cli("bench", tiny_export, "--out", tmp_path / "b", "--no-verify", *FAST_BENCH))
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rep["artifacts_verified"] == "skipped (--no-verify)" and rep["options"]["no_verify"] is True


def test_data_synth_folder_has_normal_permissions(tmp_path):
    out = tmp_path / "synth"
    ok(run_cli("data", "synth", out, "--cases", "1", "--slices", "1", "--size", "16"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask


def test_all_background_data_set_is_warned_about(tiny_data, tmp_path):
    import nibabel as nib

    root = tmp_path / "empty-masks"
    shutil.copytree(tiny_data, root)
    for f in (root / "labels").iterdir():
        img = nib.load(str(f))
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(f))
    p = ok(run_cli("data", "check", root))
    assert "no mask has a foreground pixel" in p.stdout and "problems      none" not in p.stdout
    p = ok(run_cli("train", "--model", "enet", "--data", root, "--out", tmp_path / "run", "--epochs", "1",
                   "--size", "32", "--batch", "4", "--steps-per-epoch", "1"))
    assert "warning: no mask of the train split" in p.stderr


def test_host_ssh_option_and_calib_data_are_checked_before_loading(tiny_export, tiny_run, tmp_path):
    for extra, words in ((["--host", "-oProxyCommand=evil"], "is not a host"),
                         (["--host", "u@h", "--ssh-option", "-o StrictHostKeyChecking=no"], "host key checking")):
        p = run_cli("bench", tiny_export, "--device", "jetson", "--out", tmp_path / "rep", *extra)
        line = one_error(p, 2)
        assert words in line and "loading" not in p.stderr
    p = run_cli("export", tiny_run, "--target", "onnxruntime", "--precision", "int8", "--calib-data", tmp_path / "nope",
                "--out", tmp_path / "exp")
    line = one_error(p, 2)
    assert "nope" in line and "loading" not in p.stderr and not (tmp_path / "exp").exists()


def test_missing_run_is_exit_2_in_eval_and_export(tmp_path):
    for args in (["eval", tmp_path / "no-run"], ["export", tmp_path / "no-run", "--target", "onnxruntime", "--out", tmp_path / "o"]):
        p = run_cli(*args)
        assert p.returncode == 2 and "no-run" in p.stderr, p.stderr


def test_jump_host_gets_strict_host_key_options(tiny_export, tmp_path):
    """A fake ssh on PATH records its arguments: -J becomes a ProxyCommand whose ssh checks host keys."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "argv.json"
    for tool in ("ssh", "scp"):
        script = bin_dir / tool
        script.write_text(f"#!{sys.executable}\nimport json, sys\n"
                          f"open({str(log)!r}, 'a').write(json.dumps(sys.argv) + '\\n')\n"
                          "sys.stderr.write('ssh: connect to host h port 22: Connection refused\\n')\nsys.exit(255)\n")
        script.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    p = run_cli("bench", tiny_export, "--device", "jetson", "--host", "nvidia@jetson", "--ssh-option", "-J admin@bastion:2222",
                "--out", tmp_path / "rep", *FAST_BENCH, env=env)
    one_error(p, 1)
    argv = json.loads(log.read_text().splitlines()[0])
    assert "-J" not in argv
    proxy = next(a for a in argv if a.startswith("ProxyCommand="))
    assert "StrictHostKeyChecking=yes" in proxy and "BatchMode=yes" in proxy and "admin@bastion" in proxy and "-p 2222" in proxy
    assert argv[argv.index("StrictHostKeyChecking=yes") - 1] == "-o"
    assert not (tmp_path / "rep").exists()
