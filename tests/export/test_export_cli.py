"""``pncd export`` end to end on a tiny trained run: artifacts, manifest, runners, options.

The run is a test-only two-stage network (conftest.TinySeg) trained for a few steps on the
synthetic phantoms at 32 x 32, so Dice against the ground truth means something and each
export takes seconds. The CLI runs in-process (``pncd.cli.main``) because the test network is
registered in this process only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from pncd.cli import main
from pncd.export.manifest import sha256_file, verify
from pncd.targets.registry import load_runner, read_manifest

from export_helpers import SIZE


def export(*args: str) -> int:
    """Run ``pncd export ARGS`` in-process; returns the exit status."""
    with pytest.raises(SystemExit) as e:
        main(["export", *map(str, args)])
    return e.value.code


def torch_logits_of(run, images: np.ndarray) -> np.ndarray:
    from pncd.checkpoint import load_model
    from pncd.export.parity import torch_logits

    model, _ = load_model(run)
    return torch_logits(model, images)


def test_onnxruntime_fp32_manifest_and_runner(make_run, tmp_path, held_out, capsys):
    run = make_run()
    out = tmp_path / "ort-fp32"
    assert export(run, "--target", "onnxruntime", "--precision", "fp32", "--out", out) == 0
    man = json.loads((out / "manifest.json").read_text())

    # What the bench needs, and where the artifact came from.
    assert (man["target"], man["precision"], man["runtime"], man["artifact"]) == ("onnxruntime", "fp32", "onnxruntime", "model.onnx")
    assert (man["input_name"], man["output_name"]) == ("image", "logits")
    assert man["input"]["shape"] == [1, 1, SIZE, SIZE] and man["output"]["shape"] == [1, 2, SIZE, SIZE]
    assert man["source_run"] == str(run.resolve())
    assert man["source"]["config_sha256"] == sha256_file(run / "config.json")
    assert man["source"]["checkpoint_sha256"] == sha256_file(run / "best.safetensors")
    assert man["model"]["name"] == "export_tiny" and man["model"]["parameters"] > 0
    cfg = json.loads((run / "config.json").read_text())
    assert man["data"] == cfg["data"]
    assert man["calibration"] is None
    assert man["exporter"]["dynamo"] is True and man["exporter"]["opset_version"] == 18
    assert man["exporter"]["external_data"] is False
    assert {"torch", "onnx", "onnxruntime"} <= set(man["versions"])

    # Hashes match the files, and every file is listed.
    assert [f["name"] for f in man["files"]] == ["model.onnx"]
    assert man["files"][0]["sha256"] == sha256_file(out / "model.onnx")
    assert man["files"][0]["bytes"] == (out / "model.onnx").stat().st_size
    assert verify(out) == []
    assert not list(out.glob("*.onnx.data"))

    # Parity against torch, recorded on the held-out (val) images.
    p = man["parity"]
    assert p["split"] == "val" and p["images"] == len(held_out)
    assert p["argmax_agreement"] >= 0.9999 and p["max_abs_logit_diff"] < 1e-3
    assert p["dice_gt_torch"] > 0.2, "the fixture run should have learned something"
    assert p["dice_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert man["checks"]["passed"] is True

    # The runner the bench uses reproduces torch.
    with load_runner(out, device="cpu", threads=1) as r:
        assert r.input_names() == ["image"]
        got = r.infer({"image": held_out.images[:1]})["logits"]
        assert r.settings["runtime"] == "onnxruntime" and r.last_inference_time > 0
    np.testing.assert_allclose(got, torch_logits_of(run, held_out.images[:1]), atol=1e-4)
    assert "wrote" in capsys.readouterr().err


def test_manifest_verify_detects_tampering(make_run, tmp_path):
    out = tmp_path / "ort"
    assert export(make_run(), "--target", "onnxruntime", "--out", out) == 0
    (out / "model.onnx").write_bytes((out / "model.onnx").read_bytes() + b"\0")
    (out / "extra.txt").write_text("x")
    problems = verify(out)
    assert any("model.onnx: SHA-256 differs" in p for p in problems)
    assert any("extra.txt: not listed" in p for p in problems)


def test_onnxruntime_int8_records_calibration(make_run, tmp_path, synthetic_root):
    out = tmp_path / "ort-int8"
    # --no-strict: the subject is the calibration record; on 6 validation images the 99% check
    # swings with the CPU (97.8% on one CI machine, 99.7% on another) and is asserted below either way
    code = export(make_run(), "--target", "onnxruntime", "--precision", "int8", "--calib-size", "8",
                  "--calib-method", "entropy", "--no-strict", "--out", out)
    assert code == 0
    man = read_manifest(out)
    c = man["calibration"]
    assert (c["split"], c["count"], c["method"], c["backend_method"]) == ("train", 8, "entropy", "Entropy")
    assert c["data_root"] == str(synthetic_root) and c["split_size"] >= 8
    assert man["build"]["quant_format"] == "QDQ" and man["build"]["per_channel"] is True
    assert man["build"]["keep_float"]["layers"] == ["first"] and man["build"]["keep_float"]["nodes"]
    m = onnx.load(str(out / "model_int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in m.graph.node)
    p = man["parity"]
    assert "onnxruntime_session_config" not in p  # run as a deployment runs it (7-bit weights need no option)
    with load_runner(out) as r:
        assert "session.x64quantprecision" not in r.settings
    assert p["dice_ratio"] is not None and p["dice_gt_export"] is not None
    # The check is recorded either way; with a trained tiny net INT8 keeps its Dice.
    assert man["checks"]["rule"].startswith("INT8 Dice >= 99%")
    assert man["checks"]["passed"] == (p["dice_ratio"] >= 0.99)
    assert man["checks"]["passed"] or man["checks"]["warnings"]  # a miss is written down


def test_openvino_int8_accuracy_control(make_run, tmp_path):
    out = tmp_path / "ov-int8"
    code = export(make_run(), "--target", "openvino", "--precision", "int8", "--calib-size", "8",
                  "--accuracy-control", "--max-dice-drop", "0.02", "--no-strict", "--out", out)  # its own bar: 0.02
    assert code == 0
    man = read_manifest(out)
    assert {f["name"] for f in man["files"]} == {"model.xml", "model.bin"}
    b = man["build"]
    assert b["quantizer"] == "nncf.quantize_with_accuracy_control"
    assert b["accuracy_control"]["max_drop"] == 0.02 and b["accuracy_control"]["validation_split"] == "val"
    # by default accuracy control validates on the whole val split, not only the parity images
    assert b["accuracy_control"]["validation_images"] == man["parity"]["split_size"]
    assert b["preset"].startswith("MIXED")  # the default preset
    assert man["calibration"]["backend_method"] == "nncf MINMAX"
    # INT8's float layers compute in f32 (auto), not in OpenVINO's bf16 default on BF16 CPUs; the label says
    # how many convolutions the plugin ran in INT8 (its runtime graph), never plain "f32"
    used = man["inference_precision"]["used"]
    assert man["inference_precision"]["requested"] == "auto" and man["inference_precision"]["hint"] == "f32"
    assert used.startswith("int8 (") and used.endswith("convolutions; f32 elsewhere)"), used
    with load_runner(out) as r:
        assert r.settings["config"].get("INFERENCE_PRECISION_HINT") == "f32"
        assert r.inference_precision() == "f32"
        assert r.infer({"image": np.zeros((1, 1, SIZE, SIZE), np.float32)})["logits"].shape == (1, 2, SIZE, SIZE)


def test_openvino_int8_performance_preset(make_run, tmp_path):
    """--ov-preset performance: symmetric activations (NNCF PERFORMANCE), recorded in the manifest; the model runs.
    (The default, MIXED, is checked in test_openvino_int8_accuracy_control.)"""
    out = tmp_path / "ov-int8-perf"
    assert export(make_run(), "--target", "openvino", "--precision", "int8", "--calib-size", "8", "--ov-preset", "performance",
                  "--no-strict", "--out", out) == 0  # --no-strict: the subject is the preset, not the 99% check
    man = read_manifest(out)
    assert man["build"]["preset"].startswith("PERFORMANCE")
    with load_runner(out) as r:
        assert r.infer({"image": np.zeros((1, 1, SIZE, SIZE), np.float32)})["logits"].shape == (1, 2, SIZE, SIZE)


def test_openvino_fp32_runs_with_f32_hint(make_run, tmp_path, held_out):
    run = make_run()
    out = tmp_path / "ov-fp32"
    assert export(run, "--target", "openvino", "--precision", "fp32", "--out", out) == 0
    man = read_manifest(out)
    assert man["build"]["compress_to_fp16"] is False
    assert man["build"]["parity_config"]["INFERENCE_PRECISION_HINT"] == "f32"
    with load_runner(out, threads=1) as r:
        assert r.settings["config"]["INFERENCE_PRECISION_HINT"] == "f32"
        assert r.inference_precision() == "f32"
        got = r.infer({"image": held_out.images[:1]})["logits"]
    np.testing.assert_allclose(got, torch_logits_of(run, held_out.images[:1]), atol=1e-4)


def test_tensorrt_int8_is_symmetric_qdq_and_runs_on_onnxruntime(make_run, tmp_path, held_out):
    out = tmp_path / "trt-int8"
    # --no-strict: the subject is the QDQ layout, not the 99% check (CPU-dependent on 6 images)
    assert export(make_run(), "--target", "tensorrt", "--precision", "int8", "--calib-size", "8", "--no-strict",
                  "--out", out) == 0
    man = read_manifest(out)
    assert man["artifact"] == man["onnx"] == "model_int8.onnx" and man["runtime"] == "tensorrt"
    assert man["build"]["activation_type"] == "QInt8"
    extra = man["build"]["extra_options"]
    assert extra["ActivationSymmetric"] and extra["WeightSymmetric"] and extra["QuantizeBias"] is False
    m = onnx.load(str(out / "model_int8.onnx"))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    quant = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    dequant = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert quant and dequant
    for n in quant + dequant:  # signed INT8 with zero points 0: TensorRT's explicit quantization
        zp = inits.get(n.input[2]) if len(n.input) > 2 else None
        assert zp is not None and zp.dtype == np.int8 and not zp.any(), n.name
    for n in dequant:  # TensorRT parses DQ only on activation types: every DQ input comes from a Q node
        assert n.input[0] not in inits and producers[n.input[0]].op_type == "QuantizeLinear", n.name
    kept = set(man["build"]["keep_float"]["nodes"])
    assert kept, "the first layer stays in float by default"
    for conv in (n for n in m.graph.node if n.op_type == "Conv" and n.name not in kept):
        assert producers[conv.input[1]].op_type == "DequantizeLinear"  # weights quantized (float + Q/DQ)
        if len(conv.input) > 2:
            assert inits[conv.input[2]].dtype == np.float32  # bias kept in float
    plans = man["tensorrt"]["plans"]
    assert plans["10.3 (JetPack 6.x)"]["builder_flags"] == ["INT8", "FP16"]
    assert plans["10.16 (JetPack 7.2)"]["strongly_typed"] is True
    assert man["tensorrt"]["engine"] is None
    note = man["tensorrt"]["engine_note"]  # printed on the console too
    assert note.startswith("no engine built: tensorrt is not installed here; on the NVIDIA machine run: ")
    assert "trtexec --onnx=model_int8.onnx --saveEngine=model.engine --int8 --fp16  (TensorRT 10.3 (JetPack 6.x))" in note
    assert "trtexec --onnx=model_int8.onnx --saveEngine=model.engine --stronglyTyped  (TensorRT 10.16" in note
    assert man["parity"]["runtime"] == "onnxruntime (the TensorRT ONNX)"
    # ONNX Runtime sums the INT8 products in int32, as TensorRT does, also on CPUs without VNNI
    assert man["parity"]["onnxruntime_session_config"] == {"session.x64quantprecision": "1"}
    with load_runner(out, runtime="onnxruntime") as r:
        assert r.infer({"image": held_out.images[:1]})["logits"].shape == (1, 2, SIZE, SIZE)
        assert r.settings["session.x64quantprecision"].startswith("1 ")
    from pncd.errors import PncdError

    with pytest.raises(PncdError, match="TensorRT runs on an NVIDIA GPU"):
        load_runner(out, device="cpu")


def test_int8_first_layer_in_float_keeps_the_lesion(make_run, tmp_path):
    """The promise: TensorRT's INT8 keeps the lesion (>= 95% of the FP32 Dice of this tiny trained
    network) with the first layer in float (the default) and with every layer quantized, and the
    export's check on a CPU says so on every x86-64 CPU kind.

    The check runs TensorRT's INT8 ONNX on ONNX Runtime with products summed in int32, as TensorRT
    sums them (``session.x64quantprecision``). With ONNX Runtime's default kernels a CPU without VNNI
    adds pairs of u8 x s8 products in int16 (vpmaddubsw), and the first layer, which reads the
    z-scored image with the lesion as its brightest outlier, saturated and lost the lesion there
    (measured: Dice ratio < 0.5 with every layer quantized, on AVX2 CPUs), which TensorRT on a GPU
    would not; with VNNI 'none' kept it (1.003 on an AVX-512 VNNI machine)."""
    from pncd.targets.cpu import has_vnni, isa_summary

    run = make_run()
    ratios = {}
    for keep in ("none", "first"):
        out = tmp_path / f"trt-int8-{keep}"
        # --no-strict: this test's own bar is 95% (below); the export's 99% check is recorded either way
        assert export(run, "--target", "tensorrt", "--precision", "int8", "--calib-size", "16",
                      "--keep-float", keep, "--no-strict", "--out", out) == 0
        man = read_manifest(out)
        assert man["build"]["keep_float"]["layers"] == ([] if keep == "none" else ["first"])
        assert man["parity"]["onnxruntime_session_config"] == {"session.x64quantprecision": "1"}
        ratios[keep] = man["parity"]["dice_ratio"]
        assert man["checks"]["passed"] == (ratios[keep] >= 0.99)
    print(f"CPU {isa_summary()}: VNNI {'yes' if has_vnni() else 'no'}; Dice ratios {ratios}")
    assert ratios["first"] >= 0.95 and ratios["none"] >= 0.95, ratios


def test_jetson_writes_onnx_and_manifest_only(make_run, tmp_path):
    out = tmp_path / "jetson-fp16"
    assert export(make_run(), "--target", "jetson", "--precision", "fp16", "--out", out) == 0
    man = read_manifest(out)
    assert sorted(p.name for p in out.iterdir()) == [".pncd-owned.json", "manifest.json", "model_fp16.onnx"]
    assert man["tensorrt"]["engine"] is None and "on the device" in man["tensorrt"]["engine_note"]
    assert man["tensorrt"]["plans"]["10.3 (JetPack 6.x)"]["builder_flags"] == ["FP16"]
    assert man["parity"]["argmax_agreement"] >= 0.999


def test_dynamic_batch_and_input_size(make_run, tmp_path, held_out):
    run = make_run()
    out = tmp_path / "dyn"
    assert export(run, "--target", "onnxruntime", "--dynamic-batch", "--input-size", "48x32", "--out", out) == 0
    man = read_manifest(out)
    assert man["input"]["shape"] == ["batch", 1, 48, 32]
    m = onnx.load(str(out / "model.onnx"))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(0).standard_normal((3, 1, 48, 32)).astype(np.float32)
    with load_runner(out) as r:
        y = r.infer({"image": x})["logits"]
    assert y.shape == (3, 2, 48, 32)
    np.testing.assert_allclose(y, torch_logits_of(run, x), atol=1e-4)
    assert man["parity"]["argmax_agreement"] >= 0.9999


def test_force_replaces_an_existing_export(make_run, tmp_path):
    out = tmp_path / "again"
    assert export(make_run(), "--target", "onnxruntime", "--out", out) == 0
    (out / "notes.txt").write_text("mine")  # not pncd's: --force keeps it, and removes pncd's old files
    assert export(make_run(), "--target", "onnxruntime", "--precision", "fp16", "--out", out, "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == [".pncd-owned.json", "manifest.json", "model_fp16.onnx", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"
    assert verify(out) == ["notes.txt: not listed in the manifest"]


def test_config_file_sets_defaults(make_run, tmp_path):
    cfg = tmp_path / "export.yaml"
    cfg.write_text("target: onnxruntime\nprecision: fp16\nparity_images: 4\n")
    out = tmp_path / "from-config"
    assert export("--config", cfg, make_run(), "--out", out) == 0
    man = read_manifest(out)
    assert man["precision"] == "fp16" and man["parity"]["images"] == 4
    assert man["options"]["config"] == str(cfg)


def test_data_overrides_the_root_a_moved_run_records(make_run, tmp_path, capsys):
    """A run trained on another machine records a data root that does not exist here: --data
    points the parity check (and calibration) at the data's copy on this machine."""
    import shutil

    run = tmp_path / "moved-run"
    shutil.copytree(make_run(), run)
    cfg = json.loads((run / "config.json").read_text())
    real_root = cfg["data"]["root"]
    cfg["data"]["root"] = "/nonexistent/elsewhere/data"
    (run / "config.json").write_text(json.dumps(cfg))
    assert export(run, "--target", "onnxruntime", "--out", tmp_path / "a") != 0
    assert not (tmp_path / "a").exists()
    assert export(run, "--target", "onnxruntime", "--data", real_root, "--out", tmp_path / "b") == 0
    man = read_manifest(tmp_path / "b")
    assert man["parity"]["data_root"] == str(Path(real_root).resolve())
    assert man["parity"]["argmax_agreement"] >= 0.9999
