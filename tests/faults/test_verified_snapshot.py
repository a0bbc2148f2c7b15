"""The bench runs the very files it verified, and one process at a time writes an --out.

The bench reads each manifest once, checks every listed file's SHA-256 and runs the artifact
from a private copy of the bytes it checked: an ``export --force`` into the artifact's folder
while the bench runs (simulated when the runner is about to load) cannot turn a row labelled
"fp32, verified" into a measurement of other files. ``pncd export`` and ``pncd bench`` take the
lock of their --out that train and distill take: a second writer is refused at once, in one
line, and nothing is created."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from pncd.outlock import lock_path, out_lock
from tests.faults.fault_helpers import one_error, siblings
from tests.helpers import run_cli

FAST_BENCH = ["--iters", "1", "--warmup", "0", "--n-boot", "100", "--overlays", "0", "--batch", "1", "--no-reference"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export_force_over(folder: Path) -> None:
    """What ``pncd export --force`` into ``folder`` leaves: another model.onnx (its weights
    doubled) and a manifest whose SHA-256 fits it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / "model.onnx"))
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype.kind == "f" and w.size > 1:
            init.CopyFrom(numpy_helper.from_array(w * 2, init.name))
    onnx.save(model, str(folder / "model.onnx"))
    man = json.loads((folder / "manifest.json").read_text())
    for e in man["files"]:
        e["sha256"] = _sha256(folder / e["name"])
    (folder / "manifest.json").write_text(json.dumps(man))


def test_the_bench_runs_the_bytes_it_verified(tiny_export, tmp_path, monkeypatch):
    import pncd.targets.registry as registry
    from pncd.bench.options import BenchOptions
    from pncd.bench.pipeline import run as bench

    art = tmp_path / "exp"
    shutil.copytree(tiny_export, art)
    verified = _sha256(art / "model.onnx")
    real, loaded = registry.load_runner, []

    def spy(artifact, *args, **kwargs):
        if not loaded:
            _export_force_over(art)  # the folder changes after the bench verified it
        d = Path(artifact)
        man = json.loads((d / "manifest.json").read_text())
        loaded.append((d, _sha256(d / man["artifact"])))
        return real(artifact, *args, **kwargs)

    monkeypatch.setattr(registry, "load_runner", spy)
    out = tmp_path / "rep"
    report = bench([art], BenchOptions(out=out, iters=1, warmup=0, n_boot=100, overlays=0, batch=1, reference=False,
                                       progress=False), log=lambda m: None)
    assert _sha256(art / "model.onnx") != verified  # the folder did change
    assert loaded and all(sha == verified for _d, sha in loaded), loaded
    assert all(d != art and not d.exists() for d, _sha in loaded)  # a private copy, removed at the end
    (entry,) = report.entries
    assert entry["artifact_dir"] == str(art) and entry["precision"] == "fp32"
    assert entry["name"] == entry["id"] == entry["key"] == "run-onnxruntime-fp32"  # <run>-<target>-<precision>
    assert report.artifacts_verified.startswith("sha256")
    assert not lock_path(out).exists() and siblings(out) == []


def test_a_damaged_file_is_refused_before_anything_is_copied_or_written(tiny_export, tmp_path):
    from pncd.bench.options import BenchOptions
    from pncd.bench.pipeline import run as bench
    from pncd.errors import PncdError

    art = tmp_path / "exp"
    shutil.copytree(tiny_export, art)
    onnx = art / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(PncdError) as e:
        bench([art], BenchOptions(out=tmp_path / "rep", reference=False, progress=False), log=lambda m: None)
    assert "model.onnx: SHA-256 differs from the manifest" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "rep").exists() and siblings(tmp_path / "rep") == []


@pytest.mark.parametrize("command", ["export", "bench"])
def test_a_second_writer_of_a_new_out_is_refused_at_once(command, tiny_run, tiny_export, tmp_path):
    out = tmp_path / "new" / "out"
    args = {"export": ["export", tiny_run, "--target", "onnxruntime", "--out", out, "--parity-images", "2"],
            "bench": ["bench", tiny_export, "--out", out, *FAST_BENCH]}[command]
    with out_lock(out, "pncd test"):
        p = run_cli(*args)
        line = one_error(p, 2)
        assert f"{out} is in use by another pncd process (pid {os.getpid()}" in line and "pncd test" in line, line
        assert not out.exists() and sorted(x.name for x in out.parent.iterdir()) == [lock_path(out).name]
        assert "loading" not in p.stderr  # refused before any data is read
    assert not out.parent.exists()  # the folder made for the lock went with it


def test_an_export_into_a_report_being_written_is_refused(tiny_run, tmp_path):
    """One lock per --out, whatever writes it: an export into a folder a bench is writing."""
    out = tmp_path / "shared"
    with out_lock(out, "pncd bench"):
        line = one_error(run_cli("export", tiny_run, "--target", "onnxruntime", "--out", out, "--force",
                                 "--parity-images", "2"), 2)
        assert "in use by another pncd process" in line and "pncd bench" in line
    assert not out.exists()
