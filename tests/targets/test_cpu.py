"""Which precision OpenVINO computes in, on each kind of x86-64 CPU the project meets.

The CPU kinds are described by OpenVINO's OPTIMIZATION_CAPABILITIES, which the resolution reads;
the tests below set them to those of each kind, so every case is checked on any machine, and the
last test checks this machine's own answer against the real OpenVINO.
"""

from __future__ import annotations

import pytest

from pncd.errors import PncdError
from pncd.targets import cpu

KINDS = {
    # AMD EPYC before Zen 4, Intel before Cooper Lake: no BF16, no FP16 arithmetic
    "avx2": ("FP32", "INT8", "BIN", "EXPORT_IMPORT"),
    # AMD Zen 4/5, Intel Cooper/Ice Lake: AVX-512 BF16 (OpenVINO's own default is then bf16)
    "avx512-bf16": ("BF16", "WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"),
    # Intel Sapphire Rapids and later: AVX-512 FP16 and AMX
    "avx512-fp16-amx": ("FP32", "BF16", "FP16", "INT8", "BIN", "EXPORT_IMPORT"),
}


@pytest.fixture
def caps(monkeypatch):
    def use(kind: str) -> None:
        monkeypatch.setattr(cpu, "openvino_capabilities", lambda device="CPU": KINDS[kind])

    return use


@pytest.mark.parametrize("kind", list(KINDS))
def test_auto_follows_the_artifact_never_bf16(caps, kind):
    caps(kind)
    assert cpu.resolve_inference_precision("auto", "fp32") == "f32"
    assert cpu.resolve_inference_precision(None, "int8") == "f32"
    fp16 = cpu.resolve_inference_precision("auto", "fp16")
    assert fp16 == ("f16" if "FP16" in KINDS[kind] else "f32")
    assert cpu.resolve_inference_precision("f32", "fp16") == "f32"


@pytest.mark.parametrize("kind,asked,ok", [
    ("avx2", "bf16", False), ("avx2", "f16", False),
    ("avx512-bf16", "bf16", True), ("avx512-bf16", "f16", False),
    ("avx512-fp16-amx", "bf16", True), ("avx512-fp16-amx", "f16", True),
])
def test_explicit_precision_is_honoured_or_refused(caps, kind, asked, ok):
    caps(kind)
    if ok:
        assert cpu.resolve_inference_precision(asked, "fp16") == asked
    else:
        with pytest.raises(PncdError, match=f"cannot compute in {asked} on this CPU"):
            cpu.resolve_inference_precision(asked, "fp16")


def test_unknown_precision_is_one_line():
    with pytest.raises(PncdError, match="--inference-precision 'fp8' is unknown"):
        cpu.resolve_inference_precision("fp8", "fp32")


def test_this_machine_runs_what_was_resolved(tmp_path):
    """The real plugin computes in the resolved precision (not its bf16 default) on this CPU."""
    ov = pytest.importorskip("openvino")
    import numpy as np

    from pncd.targets.openvino_rt import OpenVinoRunner

    param = ov.opset13.parameter([1, 4], np.float32, name="x")
    model = ov.Model([ov.opset13.relu(param)], [param], "tiny")
    xml = tmp_path / "tiny.xml"
    ov.save_model(model, str(xml))
    for artifact in ("fp32", "fp16", "int8"):
        hint = cpu.resolve_inference_precision("auto", artifact)
        with OpenVinoRunner(xml, precision_hint=hint) as r:
            assert r.inference_precision() == hint, (artifact, cpu.isa_summary())
            out = r.infer({"x": np.array([[-1.0, 0.5, 2.0, -3.0]], np.float32)})
        assert np.allclose(next(iter(out.values())), [[0.0, 0.5, 2.0, 0.0]])
