"""INT8 on an x86 CPU without VNNI, for real: pncd under ``qemu-x86_64 -cpu Haswell``.

QEMU's user-mode emulator (Debian's ``qemu-user``; ``.ci/run`` installs it) runs this very Python
and its ONNX Runtime / OpenVINO on a Haswell CPU model: AVX2 without AVX-512 or VNNI, as CPUID
reports it to the runtimes, which then pick their AVX2 kernels (u8 x s8 products summed in pairs
into int16 by ``vpmaddubsw``, which saturates). On such a CPU the demo's INT8 with 8-bit weights
kept 33% (ONNX Runtime) and 23% (OpenVINO) of its Dice. Where the emulator is missing the tests
skip with the reason; nothing here is mocked.

The artifacts are the CI gate's (``tests/test_pipeline_gate.py``: the committed checkpoint
``bench/results/ci-gate/enet-pncd`` exported on this machine with pncd export's defaults), so the
emulated AVX2 CPU is gated against the same committed baseline as the host.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CI_GATE_BASELINE, CI_GATE_RUN

QEMU = shutil.which("qemu-x86_64")
CPU_MODEL = "Haswell"  # AVX2, FMA; no AVX-512, no VNNI

pytestmark = [
    pytest.mark.skipif(platform.machine() != "x86_64" or QEMU is None,
                       reason="needs qemu-x86_64 (Debian's qemu-user, installed by .ci/run) on an x86-64 host"),
    pytest.mark.timeout(1200),
]

BENCH_ARGS = ("--split", "test", "--iters", "3", "--warmup", "1", "--batch", "1", "--n-boot", "200", "--overlays", "0",
              "--threads", "1")


def emulated(*args: str | Path, timeout: int = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m pncd.cli ARGS`` (or ``python -c`` with args[0] == "-c") on the emulated CPU; ``env``:
    extra environment variables."""
    cmd = [QEMU, "-cpu", CPU_MODEL, sys.executable, *(["-c"] if args and args[0] == "-c" else ["-m", "pncd.cli"]),
           *map(str, args[1:] if args and args[0] == "-c" else args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})})
    # QEMU warns once per CPUID feature TCG does not emulate (TSX, x2APIC, ...): not ours
    proc.stderr = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith("qemu-x86_64: warning"))
    return proc


def test_the_emulated_cpu_has_avx2_and_no_vnni():
    """The premise of the other tests, checked where they run: CPUID (as NumPy and the runtimes
    read it) reports AVX2 without AVX-512 and VNNI, whatever the host has."""
    proc = emulated("-c", "from pncd.targets.cpu import has_vnni, isa_summary; print(has_vnni(), isa_summary())")
    assert proc.returncode == 0, proc.stderr[-2000:]
    vnni, summary = proc.stdout.strip().split(" ", 1)
    assert vnni == "False" and "AVX2" in summary and "AVX-512" not in summary, proc.stdout


@pytest.mark.slow
def test_int8_exports_pass_the_committed_gate_without_vnni(ci_gate_exports, tmp_path):
    """The demo's INT8 rows on an AVX2 CPU: the default exports (7-bit weights) benched there keep
    their Dice and pass the same gate as on the host."""
    from pncd.bench.gate import run_gate
    from pncd.io import read_json
    from pncd.targets.cpu import cpu_flags
    from tests.test_pipeline_gate import MIN_REF_RATIO

    int8 = [d for spec, d in ci_gate_exports.items() if spec.endswith(":int8")]
    proc = emulated("bench", *int8, "--out", tmp_path / "report", *BENCH_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = read_json(tmp_path / "report" / "report.json")
    isa = report["machine"]["cpu_isa"]
    assert "VNNI" not in isa, report["machine"]
    # the report says "as emulated" where the host has more than the emulated CPU; an AVX2 host is what it emulates
    assert ("emulated" in isa) == ("avx512f" in cpu_flags()), (isa, cpu_flags())
    # only the INT8 rows are benched here: the baseline's FP32 row is allowed to be missing
    ok, rows = run_gate(tmp_path / "report" / "report.json", CI_GATE_BASELINE, min_ref_ratio=MIN_REF_RATIO,
                        allow_missing=True)
    assert ok, [r for r in rows if r["status"] == "fail"]
    compared = {r["entry"] for r in rows if r["rule"] == "dice_drop" and r["status"] == "pass"}
    assert {e["key"] for e in report["entries"] if e["kind"] == "artifact"} <= compared, rows


@pytest.mark.slow
def test_int8_export_parity_check_passes_without_vnni(tmp_path):
    """``pncd export`` itself on the AVX2 CPU: quantized there (7-bit weights) and its parity
    check (Dice kept >= 99% on the held-out split, else exit 1) run by ONNX Runtime's AVX2 kernels."""
    from pncd.io import read_json

    out = tmp_path / "ort-int8"
    proc = emulated("export", CI_GATE_RUN, "--target", "onnxruntime", "--precision", "int8", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    man = read_json(out / "manifest.json")
    assert "VNNI" not in man["inference_precision"]["cpu"], man["inference_precision"]
    assert man["parity"]["dice_ratio"] >= 0.99 and man["checks"]["passed"], man["parity"]


@pytest.mark.slow
def test_8bit_weights_saturate_without_vnni_and_bench_refuses_them(tmp_path):
    """What the defaults prevent, shown on the same CPU: INT8 with 8-bit weights (``--int8-cpu
    vnni``, exported and checked on this host) loses most of its Dice there, and pncd bench refuses
    to measure it without ``--allow-int8-saturation``."""
    from pncd.io import read_json
    from tests.helpers import run_cli

    art = tmp_path / "ort-int8-vnni"
    host = run_cli("export", CI_GATE_RUN, "--target", "onnxruntime", "--precision", "int8", "--int8-cpu", "vnni",
                   "--no-strict", "--out", art)
    assert host.returncode == 0, host.stderr[-2000:]
    assert read_json(art / "manifest.json")["build"]["quantization"]["requires_vnni"] is True

    refused = emulated("bench", art, "--out", tmp_path / "refused", *BENCH_ARGS)
    assert refused.returncode == 2 and "without VNNI" in refused.stderr and "--int8-cpu any" in refused.stderr, \
        refused.stderr[-2000:]
    assert not (tmp_path / "refused").exists()

    proc = emulated("bench", art, "--out", tmp_path / "report", "--allow-int8-saturation", *BENCH_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry = next(e for e in read_json(tmp_path / "report" / "report.json")["entries"] if e["kind"] == "artifact")
    assert entry["dice_rel"] < 0.5, entry  # saturated: measured 14% of the torch Dice


def _saturating_qdq_conv(path: Path, channels: int = 32) -> float:
    """A QDQ ONNX conv as TensorRT's INT8 ONNX has it (symmetric int8 activations and weights) whose
    u8 x s8 pair sums overflow int16 for an input of 1.27 everywhere (int8 127, 255 once ONNX Runtime
    shifts it to u8) and weights of 127: writes it to ``path``; returns its exact output (the float
    sum, then quantized to the output's step of 4)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = channels
    consts = {"sa": np.array(0.01, np.float32), "so": np.array(4.0, np.float32), "z": np.array(0, np.int8),
              "wq": np.full((c, c, 3, 3), 127, np.int8), "sw": np.array(0.01, np.float32)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "sa", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sa", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "z"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["y", "so", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "so", "z"], ["logits"])]
    shape = [1, c, 8, 8]
    graph = helper.make_graph(nodes, "qdq_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    exact = 1.27 * 1.27 * c * 9  # centre pixel: 9 taps x c channels of 1.27 x 1.27
    return float(np.clip(np.round(exact / 4.0), -128, 127) * 4.0)


def test_tensorrt_int8_onnx_sums_in_int32_on_onnxruntime_without_vnni(tmp_path):
    """TensorRT's INT8 ONNX (8-bit weights, made for a GPU, which sums in int32) run on ONNX Runtime
    for the export's parity check and for pncd bench on a CPU: pncd's runner asks ONNX Runtime for
    its u8 x u8 kernels (session.x64quantprecision), so the emulated AVX2 CPU computes the exact
    sum, where ONNX Runtime's default kernels saturate (checked here too: the premise)."""
    path = tmp_path / "qdq_conv.onnx"
    exact = _saturating_qdq_conv(path)
    code = ("import sys, numpy as np; from pncd.targets.onnxrt import OnnxRuntimeRunner\n"
            "for int32 in (False, True):\n"
            "    with OnnxRuntimeRunner(sys.argv[1], int32_sums=int32) as r:\n"
            "        print(float(r.infer({'x': np.full((1, 32, 8, 8), 1.27, np.float32)})['logits'][0, 0, 4, 4]))")
    proc = emulated("-c", code, path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    default, int32 = map(float, proc.stdout.split())
    assert abs(default - exact) > 100, (default, exact)  # saturated (measured: 4.0 for 464.0)
    assert int32 == pytest.approx(exact, abs=4.0), (int32, exact)


def test_the_builtin_data_set_has_the_baselines_identity_there(tmp_path):
    """The gate refuses a report of another data set (its fingerprint: the SHA-256 of the split's
    files). The built-in synthetic set is generated on each machine: generated on the AVX2 CPU
    (NumPy's kernels for it), its test split must be the very files the baseline was written on."""
    from pncd.io import read_json

    code = ("from pncd.data import DataSpec; from pncd.data.loading import fingerprint, resolve_root; "
            "print(fingerprint(DataSpec(root=str(resolve_root(None)), size=64), 'test'))")
    proc = emulated("-c", code, timeout=600, env={"PNCD_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == read_json(CI_GATE_BASELINE)["data"]["fingerprint"]
