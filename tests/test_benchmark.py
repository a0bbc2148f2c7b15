"""``pncd benchmark``: one trained run exported to ONNX Runtime and OpenVINO in FP32 and INT8, each
artifact checked and benched on its real runtime, all in one table.

The run is a tiny network trained for a few steps on the session's synthetic data set
(``synthetic_root``). The ONNX is exported once: the tests count the exporter's calls and check
that every manifest names the same ONNX bytes. A target registered for one test whose build
fails stands for an export that fails; the TensorRT availability check is mocked in one test
(no NVIDIA GPU here), and that test says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pncd.apps.benchmark import BenchmarkOptions, plan, run_benchmark
from pncd.bench.artifact import artifact_name
from pncd.errors import RunFailed
from pncd.io import read_json, sha256_file
from pncd.targets.base import BuildResult, BuildSpec, Runner, RunnerOptions, Target

MODEL = "bench_tiny"
RUN = "tiny-seg"  # the run's name does not contain the model's: names are <run>-<target>-<precision>
FAST = dict(calib_size=8, strict=False, iters=8, warmup=2, interleave_rounds=2, batch=2, n_boot=100, overlays=0,
            threads=1, progress=False)


class TinyNet(nn.Module):
    """Two convolution stages and a 1x1 head: it learns the phantoms in a few dozen steps."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        from pncd.models import Tap

        self.a = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, num_classes, 1)
        self.taps = {"low": Tap("a", 8, 1), "high": Tap("b", 8, 1)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b(self.a(x)))


@pytest.fixture(scope="module")
def tiny_run(synthetic_root, tmp_path_factory) -> Path:
    """The network trained briefly by pncd's own training loop (registered for this module only)."""
    from pncd import models
    from pncd.options import DataOptions, TrainOptions, TrainRun
    from pncd.training.run import train

    models.list_models()
    models.register_model(MODEL, role="test")(lambda in_channels=1, num_classes=2: TinyNet(in_channels, num_classes))
    out = tmp_path_factory.mktemp("benchmark") / RUN
    try:
        train(TrainRun(out=out, model=MODEL, data=DataOptions(data=str(synthetic_root), size=32),
                       train=TrainOptions(epochs=2, steps_per_epoch=60, lr=1e-2, lesion_fraction=0.5, tensorboard=False),
                       threads=1))  # test Dice about 0.3: the FP32 exports keep exactly 100% of it
        yield out
    finally:
        models.MODELS._items.pop(MODEL, None)
        models.MODELS._meta.pop(MODEL, None)


class Counter:
    """Counts the calls of the torch -> ONNX exporter, wherever pncd calls it from."""

    def __init__(self, monkeypatch) -> None:
        import pncd.export.pipeline as pipeline
        import pncd.targets.onnx_export as onnx_export

        self.calls = 0
        real = onnx_export.export_onnx

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(onnx_export, "export_onnx", counted)
        monkeypatch.setattr(pipeline, "export_onnx", counted)


@pytest.fixture(scope="module")
def benchmarked(tiny_run, tmp_path_factory):
    """ONNX Runtime and OpenVINO, FP32 and INT8: (result, log lines, exporter calls)."""
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        counter = Counter(mp)
        result = run_benchmark(BenchmarkOptions(run=tiny_run, targets="onnxruntime,openvino", precisions="fp32,int8",
                                                out=tmp_path_factory.mktemp("bm") / "bench", **FAST), log=lines.append)
    return result, lines, counter.calls


def test_one_table_from_one_onnx(benchmarked, tiny_run):
    result, lines, calls = benchmarked
    names = [artifact_name(RUN, t, p) for t in ("onnxruntime", "openvino") for p in ("fp32", "int8")]
    ref, *arts = result.rows
    assert ref["name"] == f"{RUN}-torch-fp32" and ref["status"] == "reference" and ref["runtime"] == "torch"
    assert [r["name"] for r in arts] == names and all(r["status"] == "measured" for r in arts), arts
    for r in arts:
        assert r["runtime"] == r["target"] and r["latency_ms_median"] > 0 and r["speedup"] > 0, r
        assert r["dice"] is not None and r["gate"] in ("PASS", "FAIL") and not r["reused"], r
    computes = {r["name"]: r["computes_in"] for r in arts}
    assert computes[f"{RUN}-onnxruntime-fp32"] == computes[f"{RUN}-openvino-fp32"] == "f32"
    assert computes[f"{RUN}-onnxruntime-int8"] == "int8 (f32 where kept float)"
    assert computes[f"{RUN}-openvino-int8"].startswith("int8 (") and "convolutions" in computes[f"{RUN}-openvino-int8"]
    assert result.ok == (not result.failures and all(r["gate"] == "PASS" for r in arts))

    # the ONNX was exported once, and every artifact was built from those very bytes
    assert calls == 1, lines
    onnx_sha = sha256_file(result.out / "onnx" / "model.onnx")
    for name in names:
        man = read_json(result.out / "exports" / name / "manifest.json")
        assert man["exporter"]["onnx_sha256"] == onnx_sha and man["exporter"]["dynamo"] is True
    assert read_json(result.out / "onnx" / "onnx.json")["source"]["checkpoint_sha256"] == sha256_file(
        tiny_run / "best.safetensors")

    # one table, in benchmark.md and benchmark.json; report.json merges the reports, under the same names
    md = (result.out / "benchmark.md").read_text()
    assert result.table in md and md.count("| artifact | runtime |") == 1 and result.verdict in md
    assert len(result.table.splitlines()) == 2 + 1 + len(names)
    doc = read_json(result.out / "benchmark.json")
    assert doc["schema"] == "pncd.benchmark/1" and [r["name"] for r in doc["rows"]] == [ref["name"], *names]
    merged = read_json(result.out / "report.json")
    assert [e["name"] for e in merged["entries"]] == [ref["name"], *names]
    assert all(e["name"] == e["id"] == e["key"] for e in merged["entries"])
    assert {r["entry"] for r in result.gate_rows if r["rule"] == "ref_ratio"} == set(names)
    # progress per artifact
    for i, name in enumerate(names, 1):
        assert any(ln.startswith(f"[{i}/4] {name}: exporting") for ln in lines), lines


def test_export_line_says_which_dice_is_which(benchmarked):
    _result, lines, _calls = benchmarked
    wrote = [ln for ln in lines if ": wrote " in ln and f"{RUN}-openvino-int8" in ln]
    assert len(wrote) == 1, lines
    assert "agreement with torch: " in wrote[0] and "Dice of the masks " in wrote[0]
    assert "of torch's Dice vs labels" in wrote[0] and "Dice ratio" not in wrote[0]
    assert "computed in int8 (" in wrote[0] and "computed in f32;" not in wrote[0]


def test_gate_reads_a_baseline_keyed_by_former_names(benchmarked, tmp_path):
    """A baseline recorded when artifacts of a run not named after its model were <run>-<model>-<target>-
    <precision>: matched by that name, compared, and the gate says to re-record it."""
    from pncd.bench.gate import baseline_from_report, run_gate

    result, _lines, _calls = benchmarked
    report = read_json(result.out / "report.json")
    base = baseline_from_report(report)
    base["entries"] = {(k.replace(f"{RUN}-", f"{RUN}-{MODEL}-", 1) if v["kind"] == "artifact" else k): v
                       for k, v in base["entries"].items()}
    assert f"{RUN}-{MODEL}-openvino-int8" in base["entries"]
    warnings: list[str] = []
    ok, rows = run_gate(report, base, min_ref_ratio=0.01, warnings=warnings)
    drops = {r["entry"]: r["status"] for r in rows if r["rule"] == "dice_drop"}
    assert drops == {e["key"]: "pass" for e in report["entries"]}, rows
    assert not [r for r in rows if r["rule"] == "in_report"], rows
    assert any(f"'{RUN}-{MODEL}-openvino-int8'" in w and "--update-baseline" in w for w in warnings), warnings
    assert ok


class BrokenTarget(Target):
    """A target whose converter refuses every graph: an export that fails."""

    def build(self, onnx: Path, out_dir: Path, spec: BuildSpec) -> BuildResult:
        raise RunFailed("the broken converter refused the graph")

    def runner(self, path: Path, device: str | None, options: RunnerOptions) -> Runner:
        raise AssertionError("a failed export is never benched")


@pytest.fixture
def broken_target():
    from pncd.targets.registry import TARGETS, register_target

    register_target(BrokenTarget("broken", runtime="broken", package="onnxruntime", precisions=("fp32",),
                                 description="fails to build (test only)"))
    yield "broken"
    TARGETS._items.pop("broken", None)
    TARGETS._meta.pop("broken", None)


def test_a_failed_export_is_a_row_with_its_reason_and_exit_1(tiny_run, broken_target, tmp_path, capsys):
    from pncd.cli import main

    out = tmp_path / "bench"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items() if k not in ("strict", "progress")]
    with pytest.raises(SystemExit) as e:
        main(["benchmark", str(tiny_run), "--targets", "broken,onnxruntime", "--precisions", "fp32", "--no-strict",
              "--out", str(out), *flags])
    captured = capsys.readouterr()
    assert e.value.code == 1, captured.err
    table = [ln for ln in captured.out.splitlines() if ln.startswith("|")]
    assert table[0].startswith("| artifact | runtime | computes in | median ms | speed-up vs torch |")
    assert (f"| {RUN}-broken-fp32 | – | – | – | – | – | – | FAILED: export failed: the broken converter refused "
            "the graph |") in table, table
    ort = next(ln for ln in table if ln.startswith(f"| {RUN}-onnxruntime-fp32 |"))
    assert ort.endswith("| 100.0% | PASS |"), ort  # the others went on
    assert f"verdict: FAIL: {RUN}-broken-fp32 failed (export failed; see its row)" in captured.out
    doc = json.loads((out / "benchmark.json").read_text())
    assert doc["failures"] == {f"{RUN}-broken-fp32": "export failed: the broken converter refused the graph"}
    assert not doc["ok"] and not (out / "exports" / f"{RUN}-broken-fp32").exists()


def test_a_killed_benchmark_continues_and_reuses_what_is_done(tiny_run, tmp_path, monkeypatch):
    opts = BenchmarkOptions(run=tiny_run, targets="onnxruntime,openvino", precisions="fp32", out=tmp_path / "bench",
                            **FAST)
    first, second = artifact_name(RUN, "onnxruntime", "fp32"), artifact_name(RUN, "openvino", "fp32")

    def killed(line: str) -> None:
        if line.startswith("[2/2]"):
            raise KeyboardInterrupt  # the benchmark is stopped while it starts on the second artifact

    with pytest.raises(KeyboardInterrupt):
        run_benchmark(opts, log=killed)
    done = tmp_path / "bench" / "exports" / first / "manifest.json"
    report = tmp_path / "bench" / "reports" / first / "report.json"
    assert done.is_file() and report.is_file() and not (tmp_path / "bench" / "exports" / second).exists()
    before = (done.read_bytes(), report.read_bytes())

    counter, lines = Counter(monkeypatch), []
    result = run_benchmark(opts, log=lines.append)
    assert any(ln.startswith(f"[1/2] {first}: reused") for ln in lines), lines
    assert any(ln.startswith(f"[2/2] {second}: exporting") for ln in lines), lines
    assert (done.read_bytes(), report.read_bytes()) == before  # the first artifact was not exported or benched again
    assert counter.calls == 0  # the ONNX exported before the kill was reused too
    assert [r["name"] for r in result.rows[1:]] == [first, second] and [r["reused"] for r in result.rows[1:]] == [
        True, False]
    assert result.ok, result.table  # FP32 keeps its torch reference's Dice exactly

    # other settings: the export is reused (its options are the same), the bench is not
    lines.clear()
    again = run_benchmark(BenchmarkOptions(**{**vars(opts), "iters": 9}), log=lines.append)
    assert not any("reused" in ln for ln in lines) and not any(": exporting" in ln for ln in lines), lines
    assert done.read_bytes() == before[0] and report.read_bytes() != before[1] and again.ok


def test_tensorrt_rows_where_tensorrt_is_absent_or_present(tiny_run, monkeypatch):
    """Which TensorRT rows run (the availability check is mocked: no NVIDIA GPU on this machine)."""
    import pncd.apps.benchmark as bm

    monkeypatch.setattr(bm, "tensorrt_here", lambda: "TensorRT is not installed")
    rows = {p.name: p for p in plan(BenchmarkOptions(run=tiny_run, out="x"), RUN)}
    assert rows[f"{RUN}-tensorrt-int8"].skip.startswith("TensorRT is not installed")  # the default: a skipped row
    assert rows[f"{RUN}-onnxruntime-int8"].skip is None and f"{RUN}-jetson-fp32" not in rows
    asked = plan(BenchmarkOptions(run=tiny_run, out="x", targets="tensorrt", precisions="int8"), RUN)
    assert [(p.skip, p.device) for p in asked] == [(None, "cpu")]  # asked for: its ONNX checked on ONNX Runtime
    monkeypatch.setattr(bm, "tensorrt_here", lambda: None)
    asked = plan(BenchmarkOptions(run=tiny_run, out="x", targets="tensorrt", precisions="fp16"), RUN)
    assert [(p.skip, p.device) for p in asked] == [(None, "cuda")]


def test_a_folder_that_is_not_a_run_is_one_line_and_exit_2(tmp_path, capsys):
    from pncd.cli import main

    (tmp_path / "notes").mkdir()
    with pytest.raises(SystemExit) as e:
        main(["benchmark", str(tmp_path / "notes"), "--out", str(tmp_path / "bench")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("Error:")]
    assert e.value.code == 2 and len(err) == 1 and "not a run directory" in err[0], err
    assert not (tmp_path / "bench").exists()
