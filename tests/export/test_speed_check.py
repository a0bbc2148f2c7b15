"""What an export says about speed on this CPU: INT8 timed against FP32 on its own runtime (with the
profile's reason where it is below 1.5x), and FP16 named a GPU format for the CPU runtimes. Real
exports of the committed CI checkpoint (ENet, 64x64) on real ONNX Runtime and OpenVINO sessions."""

from __future__ import annotations

import pytest

from tests.conftest import CI_GATE_RUN


@pytest.mark.timeout(900)
def test_int8_exports_time_themselves_against_fp32(ci_gate_exports):
    from pncd.export.speed_check import GOAL
    from pncd.io import read_json

    for spec in ("onnxruntime:int8", "openvino:int8"):
        speed = read_json(ci_gate_exports[spec] / "manifest.json")["build"]["speed"]
        assert speed["fp32_ms"] > 0 and speed["int8_ms"] > 0, speed
        assert speed["speedup"] == pytest.approx(speed["fp32_ms"] / speed["int8_ms"])
        assert speed["faster"] == ("int8" if speed["speedup"] >= 1 else "fp32") and speed["goal"] == GOAL
        assert "one thread" in speed["what"] and speed["cpu"]
        if speed["speedup"] < GOAL:  # the profile's reason: where the time goes that INT8 does not speed up
            assert "of the time in its weight layers" in speed["reason"], speed
        else:
            assert speed["reason"] is None
    fp32 = read_json(ci_gate_exports["openvino:fp32"] / "manifest.json")["build"]
    assert "speed" not in fp32 and "precision_note" not in fp32


@pytest.mark.timeout(900)
def test_fp16_for_a_cpu_runtime_says_it_is_a_gpu_format(tmp_path):
    from pncd.export.pipeline import ExportOptions, export_run

    lines: list[str] = []
    man = export_run(CI_GATE_RUN, ExportOptions(target="onnxruntime", precision="fp16", out=str(tmp_path / "fp16")),
                     log=lines.append)
    note = man["build"]["precision_note"]
    assert note.startswith("FP16 is a GPU format") and "2.5x slower than FP32" in note
    assert f"note: {note}" in lines


def test_fp16_notes_by_target():
    from pncd.export.speed_check import fp16_note

    assert "OpenVINO widens the FP16 weights and computes in f32" in fp16_note("openvino", "f32")
    assert fp16_note("openvino", "f16") is None  # a CPU with FP16 arithmetic computes it
    assert fp16_note("tensorrt", None) is None and fp16_note("jetson", None) is None
