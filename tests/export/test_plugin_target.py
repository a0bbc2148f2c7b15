"""Adding a backend is one module and one registry line: a toy target, registered at run time,
exports and benches through the real CLI (``pncd export --target toy``, ``pncd bench``).

The toy target "builds" by copying the FP32 ONNX and runs it on ONNX Runtime through its own
runner class, so the test can tell that export, ``load_runner`` and the bench dispatched to it
and to nothing else. It is registered with :func:`pncd.targets.registry.register_target` (the
line a new backend adds to ``targets/registry.py``) for this test only: pncd's Registry has no
unregister, so the fixture removes its own entry afterwards (as ``tests/export/conftest.py``
does for its test networks).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pncd.cli import main
from pncd.targets.base import BuildResult, BuildSpec, Runner, RunnerOptions, Target
from pncd.targets.onnxrt import OnnxRuntimeRunner
from pncd.targets.registry import TARGETS, load_runner, read_manifest, register_target

CALLS: dict[str, int] = {"build": 0, "runner": 0}


class ToyRunner(OnnxRuntimeRunner):
    name = "toy"


class CopyTarget(Target):
    """The whole backend: copy the FP32 ONNX, run it with ONNX Runtime."""

    def build(self, onnx: Path, out_dir: Path, spec: BuildSpec) -> BuildResult:
        CALLS["build"] += 1
        shutil.copyfile(onnx, out_dir / "toy.onnx")
        return BuildResult("toy.onnx", "toy.onnx", {"toy": "a copy of the FP32 ONNX"},
                        parity_runners=[(self.name, ToyRunner(out_dir / "toy.onnx"))])

    def runner(self, path: Path, device: str | None, options: RunnerOptions) -> Runner:
        CALLS["runner"] += 1
        return ToyRunner(path, threads=options.threads)


@pytest.fixture
def toy_target():
    target = register_target(CopyTarget("toy", runtime="toy", package="onnxruntime", precisions=("fp32",),
                                        description="a copy of the FP32 ONNX on ONNX Runtime (test only)"))
    CALLS.update(build=0, runner=0)
    yield target
    TARGETS._items.pop("toy", None)
    TARGETS._meta.pop("toy", None)


def cli(*args) -> int:
    """Run ``pncd ARGS`` in-process (the toy target exists in this process only); the exit status."""
    with pytest.raises(SystemExit) as e:
        main([*map(str, args)])
    return e.value.code


def test_toy_target_exports_and_benches_through_the_cli(toy_target, make_run, synthetic_root, tmp_path, held_out,
                                                        capsys):
    run = make_run()
    art = tmp_path / "toy-fp32"
    assert cli("export", run, "--target", "toy", "--precision", "fp32", "--out", art) == 0
    man = read_manifest(art)
    assert (man["target"], man["runtime"], man["artifact"], man["onnx"]) == ("toy", "toy", "toy.onnx", "toy.onnx")
    assert man["build"] == {"toy": "a copy of the FP32 ONNX"} and man["checks"]["passed"] is True
    assert man["parity"]["runtime"] == "toy" and man["parity"]["argmax_agreement"] == 1.0
    assert CALLS == {"build": 1, "runner": 0}

    with load_runner(art, threads=1) as r:  # the bench's entry point dispatches to the toy's runner
        assert isinstance(r, ToyRunner) and CALLS["runner"] == 1
        logits = r.infer({"image": held_out.images[:1]})["logits"]
    assert logits.shape == (1, 2, *held_out.images.shape[2:]) and np.isfinite(logits).all()

    report = tmp_path / "report"
    assert cli("bench", art, "--data", synthetic_root, "--split", "val", "--out", report, "--warmup", "0",
               "--iters", "2", "--batch", "1", "--accuracy-batch", "4", "--threads", "1") == 0
    assert CALLS["runner"] == 3  # measured and scored, then timed again in the interleaved rounds
    rep = json.loads((report / "report.json").read_text())
    entry = next(e for e in rep["entries"] if e["kind"] == "artifact")
    ref = next(e for e in rep["entries"] if e["kind"] == "reference")
    assert entry["target"] == "toy" and rep["settings"][entry["id"]]["runner"] == "ToyRunner"
    assert entry["dice"] == pytest.approx(ref["dice"], abs=1e-9), "a copy of the FP32 ONNX segments as torch does"


def test_toy_target_is_offered_and_unknown_ones_listed(toy_target, make_run, tmp_path, capsys):
    assert cli("export", "--help") == 0
    assert "toy" in capsys.readouterr().out
    assert cli("export", make_run(), "--target", "toy", "--precision", "int8", "--out", tmp_path / "x") == 2
    assert "target 'toy' has no precision 'int8'" in capsys.readouterr().err
    assert cli("export", make_run(), "--target", "nope", "--out", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "unknown target 'nope'; valid target/precision pairs:" in err and "toy/fp32" in err
    assert not (tmp_path / "x").exists()
