"""The bench compares an artifact with the very weights it was exported from.
An export of a run retrained since (its checkpoint's SHA-256 differs from the manifest) is
refused unless --allow-stale-source; the torch reference loads the checkpoint the manifest
names (an export of last.safetensors is not compared with best.safetensors); a source run that
is gone (the artifact copied to another machine) is noted in the report."""

from __future__ import annotations

import hashlib
import json
import shutil

from tests.faults.fault_helpers import TINY, ok, one_error, siblings
from tests.helpers import run_cli

BENCH = ["--iters", "1", "--warmup", "0", "--n-boot", "100", "--overlays", "0", "--batch", "1"]


def _export(run, out, *extra):
    ok(run_cli("export", run, "--target", "onnxruntime", "--out", out, "--parity-images", "2", *extra))
    return json.loads((out / "manifest.json").read_text())


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entries(report_dir):
    return json.loads((report_dir / "report.json").read_text())["entries"]


def test_bench_refuses_an_export_of_a_retrained_run(tiny_run, tiny_data, copy_of, tmp_path):
    run = copy_of(tiny_run)
    art = tmp_path / "exp"
    man = _export(run, art)
    assert man["source"]["checkpoint"] == "best.safetensors"
    ok(run_cli("train", "--model", "enet", "--data", tiny_data, "--out", run, "--force", "--epochs", "1", "--seed", "9",
               *TINY))
    assert _sha256(run / "best.safetensors") != man["source"]["checkpoint_sha256"]  # retrained: other weights
    out = tmp_path / "rep"
    for extra in ([], ["--no-reference"]):
        line = one_error(run_cli("bench", art, "--out", out, *BENCH, *extra), 2)
        assert str(art) in line and str(run / "best.safetensors") in line and "retrained" in line, line
        assert man["source"]["checkpoint_sha256"][:12] in line and "--allow-stale-source" in line
        assert not out.exists() and siblings(out) == []
    ok(run_cli("bench", art, "--out", out, *BENCH, "--allow-stale-source"))
    ref, entry = _entries(out)
    assert entry["source_check"].startswith("differs from the manifest") and "--allow-stale-source" in entry["source_check"]
    assert ref["kind"] == "reference" and entry["ref_id"] == ref["id"]


def test_the_reference_is_the_checkpoint_the_artifact_was_exported_from(tiny_run, tiny_data, copy_of, tmp_path):
    """last.safetensors is made to differ from best.safetensors (another seed's weights); the
    export of last is compared with a torch reference of last, named so."""
    run = copy_of(tiny_run)
    other = tmp_path / "other"
    ok(run_cli("train", "--model", "enet", "--data", tiny_data, "--out", other, "--epochs", "1", "--seed", "9", *TINY))
    shutil.copyfile(other / "best.safetensors", run / "last.safetensors")
    assert _sha256(run / "last.safetensors") != _sha256(run / "best.safetensors")
    art = tmp_path / "exp-last"
    man = _export(run / "last.safetensors", art)
    assert man["source"]["checkpoint"] == "last.safetensors"
    out = tmp_path / "rep"
    ok(run_cli("bench", art, "--out", out, *BENCH))
    ref, entry = _entries(out)
    assert ref["id"] == f"{run.name}-last-torch-fp32" and ref["source_checkpoint"] == "last.safetensors"
    assert entry["ref_id"] == ref["id"] and entry["source_checkpoint"] == "last.safetensors"
    assert entry["source_check"] == "sha256 matches the manifest"
    assert entry["pixel_agreement"] >= 0.999  # FP32 of the same weights: what the reference predicts


def test_a_source_run_that_is_gone_is_noted(tiny_run, copy_of, tmp_path):
    run = copy_of(tiny_run)
    art = tmp_path / "exp"
    _export(run, art)
    shutil.rmtree(run)
    line = one_error(run_cli("bench", art, "--out", tmp_path / "r0", *BENCH), 2)
    assert "restore the run or pass --no-reference" in line and not (tmp_path / "r0").exists()
    ok(run_cli("bench", art, "--out", tmp_path / "r1", *BENCH, "--no-reference"))
    (entry,) = _entries(tmp_path / "r1")
    assert entry["source_check"] == "source run not found: not checked"
