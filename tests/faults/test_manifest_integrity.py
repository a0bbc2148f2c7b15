"""A manifest is trusted only as far as the files bear it out.

The bench refuses, in one line and before anything is written: an ``artifact`` outside the
folder (``../``, or a symbolic link that leads out) or not listed in ``files`` with its SHA-256;
an empty ``files``; a ``files`` entry that is not a plain relative path inside the folder; a
``target`` / ``precision`` the graph contradicts (an FP32 ONNX labelled int8, an ONNX labelled
openvino, an OpenVINO IR with FakeQuantize labelled fp32); a ``source.checkpoint`` outside the
source run (a stale source: refused unless --allow-stale-source). ``load_runner`` refuses a
manifest that names a file outside its folder even where nothing was verified (--no-verify)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from pncd.errors import PncdError
from tests.faults.fault_helpers import ok, one_error, siblings
from tests.helpers import run_cli

FAST_BENCH = ["--iters", "1", "--warmup", "0", "--n-boot", "100", "--overlays", "0", "--batch", "1", "--no-reference"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edited(tiny_export: Path, tmp_path: Path, edit: Callable[[dict[str, Any], Path], None]) -> Path:
    """A copy of the export at tmp/x/y/exp (so ``../../other`` is tmp/x/other) with its manifest
    edited by ``edit(manifest, folder)``."""
    art = tmp_path / "x" / "y" / "exp"
    shutil.copytree(tiny_export, art)
    man = json.loads((art / "manifest.json").read_text())
    edit(man, art)
    (art / "manifest.json").write_text(json.dumps(man))
    return art


def _evil(art: Path) -> Path:
    """Another model (a copy of the artifact's ONNX) outside the folder: tmp/x/other/evil.onnx."""
    evil = art.parent.parent / "other" / "evil.onnx"
    evil.parent.mkdir(exist_ok=True)
    shutil.copyfile(art / "model.onnx", evil)
    return evil


def _outside_artifact(man, art):
    _evil(art)
    man["artifact"] = man["onnx"] = "../../other/evil.onnx"


def _outside_artifact_listed(man, art):
    evil = _evil(art)
    man["artifact"] = man["onnx"] = "../../other/evil.onnx"
    man["files"].append({"name": "../../other/evil.onnx", "bytes": evil.stat().st_size, "sha256": _sha256(evil)})


def _symlink_artifact(man, art):
    evil = _evil(art)
    (art / "model.onnx").unlink()
    (art / "model.onnx").symlink_to(evil)  # same bytes, same SHA-256: but another folder's file


def _no_files(man, art):
    man["files"] = []


def _dotdot_entry(man, art):
    (art.parent / "x.txt").write_text("x")
    man["files"].append({"name": "../x.txt", "bytes": 1, "sha256": _sha256(art.parent / "x.txt")})


def _absolute_entry(man, art):
    man["files"].append({"name": str(art / "model.onnx"), "bytes": 1, "sha256": _sha256(art / "model.onnx")})


def _fp32_as_int8(man, art):
    man["precision"] = "int8"


def _onnx_as_openvino(man, art):
    man["target"] = man["runtime"] = "openvino"


CASES = {
    "artifact ../../other/evil.onnx": (_outside_artifact, "'artifact' '../../other/evil.onnx' is not one of the files"),
    "artifact outside, listed too": (_outside_artifact_listed, "files entry '../../other/evil.onnx' is not a plain"),
    "artifact a symlink out": (_symlink_artifact, "'model.onnx' leads outside the folder"),
    "files []": (_no_files, "no valid 'files' list"),
    "files entry ../x.txt": (_dotdot_entry, "files entry '../x.txt' is not a plain relative path"),
    "files entry absolute": (_absolute_entry, "is not a plain relative path inside the folder"),
    "fp32 labelled int8": (_fp32_as_int8, "model.onnx: the manifest says int8, but its graph is FP32"),
    "onnx labelled openvino": (_onnx_as_openvino, "target 'openvino' does not run 'model.onnx'"),
}


def _bench(art: Path, out: Path, **kw: Any):
    from pncd.bench.options import BenchOptions
    from pncd.bench.pipeline import run as bench

    opts = dict(iters=1, warmup=0, n_boot=100, overlays=0, batch=1, reference=False, progress=False) | kw
    return bench([art], BenchOptions(out=out, **opts), log=lambda m: None)


@pytest.mark.parametrize("case", list(CASES))
def test_a_manifest_the_files_do_not_bear_out_is_refused(case, tiny_export, tmp_path):
    edit, expected = CASES[case]
    art = _edited(tiny_export, tmp_path, edit)
    out = tmp_path / "rep"
    with pytest.raises(PncdError) as e:
        _bench(art, out)
    line = str(e.value)
    assert expected in line and line.startswith(str(art)) and "\n" not in line, line
    assert "re-export" in line
    assert not out.exists() and siblings(out) == []


@pytest.mark.parametrize("case", ["artifact ../../other/evil.onnx", "fp32 labelled int8"])
def test_the_cli_refuses_in_one_line(case, tiny_export, tmp_path):
    edit, expected = CASES[case]
    art = _edited(tiny_export, tmp_path, edit)
    out = tmp_path / "rep"
    line = one_error(run_cli("bench", art, "--out", out, *FAST_BENCH), 2)
    assert expected in line and str(art) in line, line
    assert not out.exists() and siblings(out) == []


def test_the_untouched_export_benches_as_verified(tiny_export, tmp_path):
    report = _bench(_edited(tiny_export, tmp_path, lambda man, art: None), tmp_path / "rep")
    assert report.artifacts_verified.startswith("sha256") and report.entries[0]["precision"] == "fp32"


@pytest.mark.parametrize("case", ["artifact ../../other/evil.onnx", "artifact outside, listed too"])
def test_load_runner_never_loads_a_file_outside_the_folder(case, tiny_export, tmp_path):
    """Also where nothing was verified (pncd bench --no-verify, a Python caller)."""
    from pncd.targets.registry import load_runner

    art = _edited(tiny_export, tmp_path, CASES[case][0])
    with pytest.raises(PncdError, match="is not a file inside"):
        load_runner(art)


@pytest.mark.parametrize("checkpoint", ["../x.safetensors", "/etc/passwd", "", 7])
def test_a_source_checkpoint_outside_the_run_is_a_stale_source(checkpoint, tiny_export, tmp_path):
    """Not silently "not recorded": refused as a stale source is, unless --allow-stale-source."""
    def edit(man, art):
        man["source"]["checkpoint"] = checkpoint

    art = _edited(tiny_export, tmp_path, edit)
    with pytest.raises(PncdError) as e:
        _bench(art, tmp_path / "r0")
    line = str(e.value)
    assert f"source.checkpoint {checkpoint!r} is not a file inside the source run" in line, line
    assert "--allow-stale-source" in line and "\n" not in line and not (tmp_path / "r0").exists()
    (entry,) = _bench(art, tmp_path / "r1", allow_stale_source=True).entries
    assert entry["source_check"].startswith("not checked (") and "--allow-stale-source" in entry["source_check"]


def test_the_stale_source_rule_applies_to_the_cli(tiny_export, tmp_path):
    art = _edited(tiny_export, tmp_path, lambda man, a: man["source"].update(checkpoint="../x"))
    line = one_error(run_cli("bench", art, "--out", tmp_path / "r", *FAST_BENCH), 2)
    assert "source.checkpoint '../x' is not a file inside the source run" in line and "--allow-stale-source" in line
    ok(run_cli("bench", art, "--out", tmp_path / "r", *FAST_BENCH, "--allow-stale-source"))


# --- the precision check itself, on small graphs made here (no export needed) ---------------


def _onnx(path: Path, quantized: bool = False, half: bool = False) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if quantized:
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
        inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")]
    else:
        dtype = np.float16 if half else np.float32
        nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16 if half else TensorProto.FLOAT),
                 helper.make_node("Add", ["h", "w"], ["a"]),
                 helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT)]
        inits = [numpy_helper.from_array(np.ones(1, dtype), "w")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], inits)
    onnx.save(helper.make_model(graph), str(path))
    return path


IR = """<?xml version="1.0"?>
<net name="m" version="11"><layers>
<layer id="0" name="x" type="Parameter" version="opset1"><data shape="1" element_type="f32"/></layer>
<layer id="1" name="w" type="Const" version="opset1"><data element_type="{w}" shape="1" offset="0" size="1"/></layer>
{fq}
</layers></net>
"""
FQ = '<layer id="2" name="fq" type="FakeQuantize" version="opset1"><data levels="256"/></layer>'


@pytest.mark.parametrize("graph,claims", [
    ("fp32.onnx", {"fp32": True, "fp16": False, "int8": False}),
    ("fp16.onnx", {"fp32": False, "fp16": True, "int8": False}),
    ("int8.onnx", {"fp32": False, "fp16": False, "int8": True}),
    ("fp32.xml", {"fp32": True, "fp16": False, "int8": False}),
    ("fp16.xml", {"fp32": False, "fp16": True, "int8": False}),
    ("fq.xml", {"fp32": False, "fp16": False, "int8": True}),
    ("i8.xml", {"fp32": False, "fp16": False, "int8": True}),
])
def test_the_claimed_precision_must_fit_the_graph(graph, claims, tmp_path):
    from pncd.export.manifest import claim_problem

    if graph.endswith(".onnx"):
        _onnx(tmp_path / graph, quantized=graph.startswith("int8"), half=graph.startswith("fp16"))
        target = "onnxruntime"
    else:
        w = {"fp16": "f16", "i8": "i8"}.get(graph.split(".")[0], "f32")
        (tmp_path / graph).write_text(IR.format(w=w, fq=FQ if graph.startswith("fq") else ""))
        target = "openvino"
    for precision, fits in claims.items():
        problem = claim_problem(tmp_path, {"target": target, "runtime": target, "precision": precision,
                                           "artifact": graph})
        assert (problem is None) == fits, (precision, problem)
        if not fits:
            assert f"the manifest says {precision}, but its graph is" in problem and "re-export" in problem


def test_a_runtime_not_the_targets_is_refused(tmp_path):
    from pncd.export.manifest import claim_problem

    _onnx(tmp_path / "model.onnx")
    man = {"target": "onnxruntime", "runtime": "onnxruntime", "precision": "fp32", "artifact": "model.onnx"}
    assert claim_problem(tmp_path, man) is None
    assert "is not that of target" in claim_problem(tmp_path, {**man, "runtime": "openvino"})
    assert "valid target/precision pairs" in claim_problem(tmp_path, {**man, "precision": "int4"})
