"""pncd qat end to end on tiny data: a briefly trained ENet is quantized by NNCF, fine-tuned with
fake quantization and PMD from its float self, written as QDQ ONNX, and exported through
pncd export to ONNX Runtime and OpenVINO INT8, whose manifests say the INT8 came from QAT.

Real NNCF, ONNX Runtime and OpenVINO (the first NNCF run on a machine compiles its CPU
kernels, a minute or two). TensorRT's copy of the QDQ ONNX is checked on ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.helpers import error_line, run_cli

pytest.importorskip("nncf")
pytest.importorskip("torchao")

QAT_ARGS = ("--steps", "6", "--eval-every", "3", "--calib-images", "16", "--batch", "4", "--threads", "1")


@pytest.fixture(scope="module")
def qat_run(make_run, tmp_path_factory) -> tuple[Path, Path]:
    student = make_run("enet")
    out = tmp_path_factory.mktemp("qat") / "enet-qat"
    proc = run_cli("qat", student, "--out", out, *QAT_ARGS, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "after QAT" in proc.stdout
    return student, out


def test_qat_run_holds_a_qdq_onnx_and_its_float_weights(qat_run):
    from pncd.checkpoint import load_model

    student, out = qat_run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "qat" and cfg["qat"]["parent"] == str(student.resolve())
    assert cfg["qat"]["options"]["weights"] == {"pmd": 1.0} and cfg["qat"]["library"] == "nncf"
    rows = json.loads((out / "log.json").read_text())
    assert [r["step"] for r in rows] == [0, 3, 6]
    assert all(np.isfinite(r["pmd"]) and r["pmd"] >= 0 for r in rows[1:])
    assert cfg["qat"]["qat_val_dice"] == max(r["val_dice"] for r in rows)
    graph = onnx.load(str(out / "model_qdq.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= 10 and ops.count("DequantizeLinear") >= ops.count("QuantizeLinear")
    # --keep-float first (the default): the image reaches the first layers unquantized
    readers = [n.op_type for n in graph.node if graph.input[0].name in n.input]
    assert readers and "QuantizeLinear" not in readers
    model, _ = load_model(out)  # the fine-tuned weights rebuild the plain network
    assert type(model).__name__ == "ENet"
    assert not (out.parent / f".{out.name}.tmp").exists()


@pytest.fixture(scope="module")
def qat_exports(qat_run, tmp_path_factory) -> dict[str, Path]:
    _, run = qat_run
    base = tmp_path_factory.mktemp("qat-exports")
    out = {}
    for target in ("onnxruntime", "openvino", "tensorrt"):
        out[target] = base / target
        # --no-strict: this briefly fine-tuned tiny network keeps ~95% of its FP32 Dice; what is tested
        # here is what the export ships, not its accuracy (tests/export/test_export_units.py: the rule)
        proc = run_cli("export", run, "--target", target, "--precision", "int8", "--no-strict", "--out", out[target],
                       timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_export_ships_the_qat_onnx_and_says_so(qat_run, qat_exports):
    _, run = qat_run
    for target, d in qat_exports.items():
        man = json.loads((d / "manifest.json").read_text())
        q = man["build"]["quantization"]
        assert q["route"] == "qat" and q["parent"] == json.loads((run / "config.json").read_text())["qat"]["parent"]
        assert man["calibration"] is None, target  # nothing was calibrated here
    ort_ops = [n.op_type for n in onnx.load(str(qat_exports["onnxruntime"] / "model_int8.onnx")).graph.node]
    assert "QuantizeLinear" in ort_ops
    ov_xml = (qat_exports["openvino"] / "model.xml").read_text()
    assert "FakeQuantize" in ov_xml or "FakeConvert" in ov_xml  # OpenVINO reads the QDQ pairs as INT8


def test_runtimes_agree_on_the_qat_onnx(qat_exports, held_out):
    """ONNX Runtime and OpenVINO run the same quantized graph: their label maps agree."""
    from pncd.targets.registry import load_runner

    x = held_out.images[:16]
    labels = {}
    for target in ("onnxruntime", "openvino", "tensorrt"):
        runner = load_runner(qat_exports[target], "cpu", runtime="onnxruntime" if target == "tensorrt" else None)
        with runner:
            labels[target] = np.concatenate([runner.infer({"image": x[i : i + 1]})["logits"].argmax(1)
                                             for i in range(len(x))])
    assert (labels["onnxruntime"] == labels["tensorrt"]).all()  # the same file on the same runtime
    from pncd.targets.cpu import has_vnni

    if not has_vnni():
        # ONNX Runtime's u8 x s8 kernels add pairs of products in int16 without VNNI and can
        # saturate (its documentation; test_int8_first_layer_in_float_keeps_the_lesion measures it)
        pytest.skip("no VNNI: ONNX Runtime's INT8 may saturate, so it need not agree with OpenVINO's")
    assert (labels["onnxruntime"] == labels["openvino"]).mean() >= 0.99


def test_feature_losses_are_refused(make_run, tmp_path):
    proc = run_cli("qat", make_run("enet"), "--out", tmp_path / "q", "--weight", "rd=1", *QAT_ARGS)
    assert proc.returncode == 2
    assert "tapped features" in error_line(proc) and not (tmp_path / "q").exists()


def test_bad_weight_is_refused(make_run, tmp_path):
    proc = run_cli("qat", make_run("enet"), "--out", tmp_path / "q", "--weight", "nosuch=1", *QAT_ARGS)
    assert proc.returncode == 2
    assert "nosuch" in error_line(proc) and "pmd" in error_line(proc)
