"""``pncd bench --profile``: real ONNX Runtime and OpenVINO sessions profile FP32 and INT8 exports of
the committed CI checkpoint (ENet, 64x64) per node, in sessions of their own after the timing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CI_GATE_RUN


@pytest.fixture(scope="module")
def profiled(ci_gate_exports, tmp_path_factory) -> tuple[Path, dict, list[str]]:
    """ORT FP32 + INT8 and OpenVINO FP32 + INT8 benched with --profile: (report dir, report.json, log)."""
    from pncd.bench.options import BenchOptions
    from pncd.bench.pipeline import run
    from pncd.export.pipeline import ExportOptions, export_run

    tmp = tmp_path_factory.mktemp("profile")
    ort_fp32 = tmp / "enet-ort-fp32"
    export_run(CI_GATE_RUN, ExportOptions(target="onnxruntime", precision="fp32", out=str(ort_fp32)), log=lambda _m: None)
    arts = [ort_fp32, ci_gate_exports["onnxruntime:int8"], ci_gate_exports["openvino:fp32"],
            ci_gate_exports["openvino:int8"]]
    log: list[str] = []
    out = tmp / "report"
    report = run(arts, BenchOptions(split="test", out=out, iters=20, warmup=3, interleave_rounds=0, batch=1, n_boot=100,
                                    overlays=0, threads=1, progress=False, reference=False, profile=True),
                 log=log.append)
    return out, report.to_json(), log


@pytest.mark.timeout(900)
def test_every_artifact_is_profiled_per_node(profiled):
    from pncd.io import read_json

    out, report, log = profiled
    prof = read_json(out / "profile.json")
    assert prof["schema"] == "pncd.profile/1" and prof["runs"] == 20
    entries = {e["id"]: e for e in report["entries"]}
    assert set(prof["entries"]) == set(entries)
    for ident, p in prof["entries"].items():
        nodes, s = p["nodes"], p["summary"]
        assert len(nodes) > 20, ident
        # per node the median and the mean over the 20 runs (the profilers count whole microseconds: a
        # reshape can take 0); every weight layer takes time
        assert all(n["ms"] >= 0 and n["ms_mean"] >= 0 for n in nodes), ident
        assert sum(n["ms_mean"] > 0 for n in nodes) > 0.8 * len(nodes), ident
        assert all(n["ms"] > 0 for n in nodes if n["weight_layer"]), ident
        total = sum(n["ms"] for n in nodes)
        assert total == pytest.approx(s["node_ms"])
        # the nodes run inside the inference: their sum is the latency's order of magnitude, and no
        # more than the profiling session's own wall time of a run (its slowest; per node medians of
        # different runs add up to more than the median run when the machine is busy)
        latency = entries[ident]["latency_ms_median"]
        assert latency / 10 < total < latency * 10, (ident, total, latency)
        assert len(p["wall_ms"]) == 20 and total <= max(p["wall_ms"]), (ident, total, p["wall_ms"])
        assert sum(b["share"] for b in s["buckets"].values()) == pytest.approx(1.0)
        assert sum(r["ms"] for r in s["by_op"]) == pytest.approx(total)
        assert s["weight_layers"]["total"] > 50, ident  # ENet's convolutions, each a node of its own
        assert any(line.startswith(f"[{ident}] profile (") for line in log), ident


@pytest.mark.timeout(900)
def test_int8_artifacts_show_integer_layers(profiled):
    from pncd.io import read_json

    out, report, _ = profiled
    prof = read_json(out / "profile.json")["entries"]
    for ident, p in prof.items():
        s, nodes = p["summary"], p["nodes"]
        w = s["weight_layers"]
        if p["precision"] == "fp32":
            assert w["int8"] == 0 and s["buckets"]["int8"]["share"] < 0.1, (ident, w, s["buckets"])
            assert w["float"] == w["total"]
            continue
        # INT8: most convolutions ran on 8-bit integers; the first one (kept in float) did not
        assert w["int8"] >= 0.8 * w["total"] and 1 <= w["float"] < w["total"], (ident, w)
        assert s["integer_share"] > 0.2, (ident, s["buckets"])
        if p["runtime"] == "onnxruntime":
            assert any(n["op_type"] == "QLinearConv" and n["precision"] == "int8" for n in nodes)
            kinds = {n["op_type"] for n in nodes if n["kind"] == "convert"}
            assert kinds & {"QuantizeLinear", "DequantizeLinear"}, kinds
        else:
            assert any(n["op_type"] == "Convolution" and n["exec_type"].upper().endswith(("I8", "U8")) for n in nodes)
        assert 0 < s["conversion_share"] < 1 and s["conversions"], ident


@pytest.mark.timeout(900)
def test_report_has_the_profile_section(profiled):
    out, report, _ = profiled
    md = (out / "report.md").read_text()
    assert "## Profile (the runtime's own profiler, per node)" in md
    section = md.split("## Profile (the runtime's own profiler, per node)")[1].split("\n## ")[0]
    for ident, s in report["profile"].items():
        assert f"| {ident} | {s['runtime']} |" in section
    assert "QLinearConv" in section and "Convolution" in section
    assert all("nodes" not in s or isinstance(s["nodes"], int) for s in report["profile"].values())


def test_a_jetson_artifact_is_skipped_with_the_reason():
    """The Jetson site times on the device, where pncd has no profiling hook: recorded, not failed
    (a stand-in object for the Jetson site; no device here)."""
    from types import SimpleNamespace

    from pncd.bench.profile import profile_entry, summaries

    log: list[str] = []
    p = profile_entry(SimpleNamespace(device="jetson"), "enet-jetson-int8", log.append)
    assert "trtexec --dumpProfile" in p["skipped"] and "skipped" in log[0]
    assert summaries({"enet-jetson-int8": p}) == {"enet-jetson-int8": {"skipped": p["skipped"]}}


def test_tensorrt_profile_says_why_without_tensorrt():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here; this checks the machine without it")
    from pncd.bench.profile import tensorrt_profile

    assert "TensorRT is not importable here" in tensorrt_profile(object(), {}, 1, 0)["skipped"]
