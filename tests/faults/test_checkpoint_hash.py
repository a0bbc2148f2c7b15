"""The SHA-256 of a source checkpoint is that of the very bytes loaded, at export and at bench.

Replacing ``best.safetensors`` (or ``config.json``) while an export runs must not make its
manifest vouch for the new file: the export hashes the bytes it loaded the weights from (each
file read once). Likewise the bench's torch reference loads the bytes whose SHA-256 it checked
against the manifest, not the file as it is when the reference is finally built."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from pncd.checkpoint import load_model, save_weights
from pncd.outlock import lock_path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _other_weights(run: Path, dst: Path) -> Path:
    """A checkpoint of the same network with other weights (every parameter shifted)."""
    model, _cfg = load_model(run)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    save_weights(model, dst)
    return dst


def test_read_weights_hashes_the_bytes_it_parses(tiny_run):
    from safetensors.torch import load_file

    from pncd.checkpoint import load_run, read_weights

    path = tiny_run / "best.safetensors"
    state, meta, sha = read_weights(path)
    assert sha == _sha256(path) and meta.get("model") == "enet"
    want = load_file(str(path))
    assert state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want)
    loaded = load_run(tiny_run)
    assert loaded.checkpoint == path and loaded.checkpoint_sha256 == sha
    assert loaded.config_sha256 == _sha256(tiny_run / "config.json")


def test_a_checkpoint_replaced_during_the_export_is_not_what_the_manifest_records(tiny_run, copy_of, tmp_path):
    """The first line the export logs comes after it loaded the run: the checkpoint and the
    config are replaced there, as a retrain finishing meanwhile would."""
    from pncd.export.pipeline import ExportOptions, export_run

    run = copy_of(tiny_run)
    loaded_ckpt, loaded_cfg = _sha256(run / "best.safetensors"), _sha256(run / "config.json")
    other = _other_weights(run, tmp_path / "other.safetensors")
    out = tmp_path / "exp"
    swapped: list[str] = []
    locked: list[bool] = []

    def log(msg: str) -> None:
        if not swapped:
            locked.append(lock_path(out).is_file())
            os.replace(other, run / "best.safetensors")
            cfg = json.loads((run / "config.json").read_text())
            (run / "config.json").write_text(json.dumps({**cfg, "note": "edited meanwhile"}))
            swapped.append(msg)

    man = export_run(run, ExportOptions(target="onnxruntime", precision="fp32", out=str(out), parity_images=2),
                     log=log)
    assert swapped and _sha256(run / "best.safetensors") != loaded_ckpt
    assert man["source"]["checkpoint_sha256"] == loaded_ckpt  # the bytes the ONNX was made from
    assert man["source"]["config_sha256"] == loaded_cfg
    assert json.loads((out / "manifest.json").read_text())["source"]["checkpoint_sha256"] == loaded_ckpt
    assert locked == [True] and not lock_path(out).exists()  # the export held the lock of its --out


def test_the_bench_reference_loads_the_bytes_it_checked(tiny_run, tiny_export, copy_of, tmp_path, monkeypatch):
    """The checkpoint is replaced right when the torch reference loads it (minutes after its
    SHA-256 was checked, in a real bench): the reference still gets the checked weights."""
    import shutil

    import pncd.checkpoint as ck
    from pncd.bench.options import BenchOptions
    from pncd.bench.pipeline import run as bench

    run = copy_of(tiny_run)
    art = tmp_path / "exp"
    shutil.copytree(tiny_export, art)
    man = json.loads((art / "manifest.json").read_text())
    man["source_run"] = man["source"]["run"] = str(run.resolve())
    (art / "manifest.json").write_text(json.dumps(man))
    checked = _sha256(run / "best.safetensors")
    other = _other_weights(run, tmp_path / "other.safetensors")
    real, loaded = ck.load_model, []

    def spy(path, *args, **kwargs):
        if other.exists():
            os.replace(other, run / "best.safetensors")
        loaded.append((Path(path), _sha256(Path(path))))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ck, "load_model", spy)
    report = bench([art], BenchOptions(out=tmp_path / "rep", iters=1, warmup=0, n_boot=100, overlays=0, batch=1,
                                       progress=False), log=lambda m: None)
    ref, entry = report.entries
    assert entry["source_check"] == "sha256 matches the manifest"
    assert loaded and all(sha == checked for _path, sha in loaded), loaded
    assert all(not p.exists() for p, _sha in loaded)  # a private copy, gone with the bench
    assert ref["source_checkpoint"] == "best.safetensors" and ref["id"] == f"{run.name}-torch-fp32"
    assert entry["pixel_agreement"] == pytest.approx(1.0, abs=1e-3)
