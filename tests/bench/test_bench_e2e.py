"""End to end: a trained run, exported with pncd export, benchmarked and gated (real ONNX Runtime).

The run is an ENet trained 50 steps on a tiny disk data set (conftest.py); the "perturbed"
artifact is the same export with noise added to its ONNX weights, so it loses Dice.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pncd.bench.gate import run_gate
from pncd.bench.options import BenchOptions
from pncd.bench.pipeline import run
from pncd.errors import PncdError
from pncd.privacy import public_path

pytestmark = pytest.mark.slow

FAST = dict(split="test", warmup=1, iters=8, batch=4, accuracy_batch=4, n_boot=300, progress=False)


def run_bench(artifacts, **options):
    return run(artifacts, BenchOptions(**options), log=lambda m: None)


@pytest.fixture(scope="module")
def good_report(exported, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports") / "good"
    return run_bench([exported.good], data=exported.data, out=out, **FAST)


def test_report_contents(good_report, exported):
    out = Path(good_report.path)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["schema"] == "pncd.bench/1"
    ref, art = on_disk["entries"]
    assert ref["kind"] == "reference" and art["kind"] == "artifact" and art["ref_id"] == ref["id"]
    # one name per entry, <run>-<target>-<precision>: id, key and the name report.md and the console show
    assert art["key"] == "enet-disks-onnxruntime-fp32" and ref["key"] == "enet-disks-torch-fp32"
    assert all(e["name"] == e["id"] == e["key"] for e in (ref, art))
    for e in (ref, art):
        assert all(isinstance(v, (str, int, float, bool, type(None))) for v in e.values()), "entries are flat"
        assert 0 < e["latency_ms_min"] <= e["latency_ms_median"] <= e["latency_ms_p99"] <= e["latency_ms_max"]
        assert e["latency_n"] == 8 and e["throughput_ips"] > 0 and e["first_inference_ms"] > 0
        assert e["batch_size"] == 4 and e["batch_throughput_ips"] > 0
        assert e["n_cases"] == len(on_disk["per_case"][e["id"]]) > 0
    # a trained model: clearly better than nothing, and the FP32 export matches torch exactly
    assert ref["dice"] > 0.5
    assert art["dice"] == pytest.approx(ref["dice"], abs=1e-12) and art["dice_rel"] == pytest.approx(1.0)
    assert art["pixel_agreement"] == 1.0 and art["n_slices_differ"] == 0 and art["worst_case_dice_drop"] == 0
    assert art["dice_diff_ci_lo"] == art["dice_diff_ci_hi"] == 0
    assert on_disk["machine"]["cpu_count"] >= 1 and "onnxruntime" in on_disk["versions"]
    assert on_disk["settings"][art["id"]]["runner"] == "OnnxRuntimeRunner"
    assert on_disk["data"]["root"] == public_path(exported.data)  # no absolute path in a report and on_disk["data"]["split"] == "test"
    md = (out / "report.md").read_text()
    assert "## Latency" in md and "## Against the torch reference" in md and "No slice differs" in md
    png = (out / "latency_dice.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_report_is_refused_without_force(good_report, exported):
    with pytest.raises(PncdError, match="already exists"):
        run_bench([exported.good], data=exported.data, out=good_report.path, **FAST)


def test_gate_passes_unperturbed_and_fails_perturbed(good_report, exported, tmp_path):
    baseline = tmp_path / "baseline.json"
    cli = [sys.executable, "-m", "pncd.cli", "gate"]
    p = subprocess.run([*cli, good_report.path, "--baseline", baseline, "--update-baseline"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    # the same model, benchmarked again: passes every rule
    again = run_bench([exported.good], data=exported.data, out=tmp_path / "again", **FAST)
    ok, rows = run_gate(Path(again.path), baseline, max_latency_ratio=100.0)
    assert ok and {r["status"] for r in rows} == {"pass"}
    # the perturbed weights lose Dice: fails against its torch reference and against the baseline
    bad = run_bench([exported.bad], data=exported.data, out=tmp_path / "bad", overlays=3, **FAST)
    art = bad.entries[1]
    assert art["dice"] < 0.99 * bad.entries[0]["dice"]
    p = subprocess.run([*cli, bad.path, "--baseline", baseline], capture_output=True, text=True)
    assert p.returncode == 1, p.stdout + p.stderr
    failed = {line.split()[1] for line in p.stdout.splitlines() if "FAIL" in line and line.startswith("enet")}
    assert {"ref_ratio", "dice_drop"} <= failed
    # where they disagree most, as overlays
    overlays = bad.files["overlays"]
    assert 0 < len(overlays) <= 3 and all((Path(bad.path) / o).is_file() for o in overlays)
    assert art["n_slices_differ"] > 0 and art["pixel_agreement"] < 1


def test_gate_on_missing_or_malformed_report(tmp_path, exported):
    cli = [sys.executable, "-m", "pncd.cli", "gate"]
    p = subprocess.run([*cli, tmp_path / "no-such-report"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("Error: ") and p.stderr.count("\n") == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "report.json").write_text('{"schema": "pncd.bench/1", "entries": [')
    p = subprocess.run([*cli, broken], capture_output=True, text=True)
    assert p.returncode == 2 and "not valid JSON" in p.stderr and p.stderr.count("\n") == 1


def test_bench_cli_with_gate(exported, tmp_path):
    from pncd.cli import main

    base = tmp_path / "b.json"
    first = run_bench([exported.good], data=exported.data, out=tmp_path / "r0", **FAST)
    ok = subprocess.run([sys.executable, "-m", "pncd.cli", "gate", first.path, "--baseline", base,
                         "--update-baseline"], capture_output=True, text=True)
    assert ok.returncode == 0
    args = ["bench", str(exported.bad), "--data", str(exported.data), "--out", str(tmp_path / "r1"), "--iters", "5",
            "--warmup", "1", "--batch", "1", "--n-boot", "200", "--overlays", "0", "--gate", str(base)]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 1
    assert json.loads((tmp_path / "r1" / "report.json").read_text())["entries"][1]["batch_error"]


def test_bench_bad_artifact_is_one_line_error(tmp_path, exported):
    (tmp_path / "notexport").mkdir()
    with pytest.raises(PncdError, match="not an exported artifact"):
        run_bench([tmp_path / "notexport"], out=tmp_path / "r", **FAST)
    assert not (tmp_path / "r").exists()
    with pytest.raises(PncdError, match="--host only applies"):
        run_bench([exported.good], host="me@x", out=tmp_path / "r", **FAST)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(PncdError, match="no CUDA device is visible"):
            run_bench([exported.good], device="cuda", out=tmp_path / "r", **FAST)
    assert not (tmp_path / "r").exists()


@pytest.mark.ssh
def test_bench_jetson_over_ssh(sshd, exported, tmp_path):
    """--device jetson against the test sshd: the runner's ONNX Runtime fallback (no TensorRT here)."""
    fake = Path(__file__).resolve().parents[1] / "fixtures" / "jetson" / "fake_tegrastats.py"
    rep = run_bench([exported.good], data=exported.data, device="jetson", host=sshd.host,
                    out=tmp_path / "jetson", ssh_options=sshd.options, remote_python=sshd.python,
                    tegrastats=str(fake), **FAST)
    ref, art = rep.entries
    assert ref["device"] == "cpu" and ref["where"] == "host"
    assert art["where"] == "jetson" and art["backend"] == "onnxruntime"  # the host name stays out of the report
    assert "tensorrt not importable" in art["backend_reason"]
    assert art["dice"] == pytest.approx(ref["dice"], abs=1e-12) and art["pixel_agreement"] == 1.0
    assert art["power_source"] == "VDD_IN" and art["energy_per_inference_mj"] > 0
    dev = rep.settings[art["id"]]["device"]
    assert dev["remote_cleanup"] == "removed" and not Path(dev["remote_workdir"]).exists()
    assert rep.device_machine["numpy"] == np.__version__
    assert "Device power" in (Path(rep.path) / "report.md").read_text()
