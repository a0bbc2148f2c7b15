"""``pncd benchmark``: one run exported to every target and precision, each artifact checked and
benched, all in one table.

The run's network is exported to ONNX once (:func:`pncd.export.shared_onnx.write_shared_onnx`,
``OUT/onnx/``); every artifact is built from that file (``ExportOptions.onnx``, whose checkpoint
SHA-256 the export checks), exported and checked by :func:`pncd.export.pipeline.export_run`
into ``OUT/exports/NAME``, then benched by :func:`pncd.bench.pipeline.run` into
``OUT/reports/NAME`` (interleaved with its own torch reference, so each speed-up is measured
under one machine load). ``NAME`` is :func:`pncd.bench.artifact.artifact_name`. The reports
merge into ``OUT/report.json`` (a bench report: ``pncd gate OUT`` reads it), gated with
:func:`pncd.bench.gate.run_gate`'s defaults, and the table goes to ``OUT/benchmark.md`` and
``OUT/benchmark.json`` (:mod:`pncd.apps.benchmark_table`).

A failure (an export that misses its check, a missing runtime) is a row with its reason and
does not stop the others. Targets this machine cannot run are rows saying why they were
skipped. An artifact whose manifest and bench report are already in ``OUT`` and match the run's
checkpoint SHA-256 and the options is reused, so a killed benchmark continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from pncd.apps.benchmark_table import SCHEMA, BenchmarkResult, options_record
from pncd.errors import PncdError, RunFailed
from pncd.optspec import cli, values_from

__all__ = ["SCHEMA", "BenchmarkOptions", "BenchmarkResult", "Planned", "options_record", "plan", "run_benchmark"]

Log = Callable[[str], None]
FILES = ("onnx", "exports", "reports", "benchmark.json", "benchmark.md", "report.json")  # what OUT holds
SPLITS = ("train", "val", "test", "all")
NOT_HERE = ("jetson",)  # targets benched on another machine (pncd bench --device jetson)


@dataclass(kw_only=True)
class BenchmarkOptions:
    """Options of one benchmark (the flags of ``pncd benchmark``; ``run`` is its argument)."""

    run: str | Path
    targets: tuple[str, ...] | None = field(default=None, metadata=cli(
        "Export targets, comma-separated, e.g. onnxruntime,openvino (default: every target this machine runs: "
        "onnxruntime, openvino, and tensorrt where the tensorrt package and an NVIDIA GPU exist; the others are "
        "rows saying why they were skipped).", sep=","))
    precisions: tuple[str, ...] | None = field(default=None, metadata=cli(
        "Precisions, comma-separated, e.g. fp32,int8 (default: every precision of each target).", sep=","))
    data: str | None = field(default=None, metadata=cli(
        "Data set root, replacing the one recorded in the run (export checks, calibration and bench), e.g. "
        "--data path/to/lgg-flair.", path="dir"))
    out: str | Path = field(default="benchmark", metadata=cli(
        "Folder of the benchmark (created, or continued: what is already there with these settings is reused).",
        path="any", required=True))
    split: str = field(default="test", metadata=cli("Split the bench measures Dice and latency on.", choices=SPLITS))
    calib_size: int = field(default=128, metadata=cli("Training images that calibrate INT8.", low=1))
    parity_images: int = field(default=0, metadata=cli(
        "Held-out images of each export's check against torch (0: pncd export's default).", low=0))
    strict: bool = field(default=True, metadata=cli(
        "Write an INT8 artifact that keeps < 99% of the FP32 Dice at export anyway (with the warning in its "
        "manifest), instead of a failed row.", flag="--no-strict", param="no_strict", invert=True))
    warmup: int = field(default=10, metadata=cli(low=0))
    iters: int = field(default=100, metadata=cli("Timed iterations at batch 1.", low=1))
    interleave_rounds: int = field(default=10, metadata=cli(
        "Rounds in which each artifact and its torch reference are timed in turn (0: off).", low=0))
    batch: int = field(default=8, metadata=cli("Batch size for the throughput measurement (1: skip).", low=1))
    n_boot: int = field(default=2000, metadata=cli("Bootstrap resamples for the intervals.", low=100))
    seed: int = field(default=0, metadata=cli("Bootstrap seed.", low=0))
    overlays: int = field(default=4, metadata=cli("Overlay PNGs per artifact (its worst slices).", low=0))
    anonymize: bool = field(default=False, metadata=cli(
        "Replace case ids by stable aliases in the reports (see pncd bench --anonymize)."))
    threads: int | None = field(default=None, metadata=cli(
        "Intra-op threads of each runtime and torch (default: the usable physical cores).", low=1))
    baseline: str | None = field(default=None, metadata=cli(
        "Also gate against this baseline (pncd gate --baseline), e.g. --baseline baselines/enet.json.", path="file"))
    progress: bool = True  # progress bars on stderr (Python callers only)

    def __post_init__(self) -> None:
        for name in ("targets", "precisions"):
            v = getattr(self, name)
            if isinstance(v, str):
                v = tuple(x.strip() for x in v.split(",") if x.strip())
            setattr(self, name, tuple(v) if v else None)

    @classmethod
    def from_params(cls, run: str | Path, params: dict[str, Any]) -> BenchmarkOptions:
        """Options from click's parameters (:func:`pncd.optspec.values_from`)."""
        return cls(run=run, **values_from(cls, params))

    def key(self) -> dict[str, Any]:
        """The settings that change an artifact's numbers (what a reused one must match)."""
        skip = {"run", "targets", "precisions", "out", "baseline", "progress"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


@dataclass
class Planned:
    """One row of the benchmark: a target and precision, and why it is skipped (None: it runs)."""

    name: str
    target: str
    precision: str
    skip: str | None = None
    device: str = "cpu"


def default_targets() -> list[str]:
    """Every registered target this machine could bench (Jetson artifacts are benched on the device)."""
    from pncd.targets.registry import TARGETS

    return [t for t in TARGETS if t not in NOT_HERE]


def tensorrt_here() -> str | None:
    """Why TensorRT cannot run here (None: the tensorrt package and an NVIDIA GPU are both present)."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (it needs the tensorrt package and an NVIDIA GPU)"
    import torch

    return None if torch.cuda.is_available() else "no NVIDIA GPU is visible (TensorRT runs on one)"


def _missing(target: Any, precision: str) -> str | None:
    """Why a CPU target cannot export here (a package to install), or None."""
    from pncd.export.pipeline import require_runtime

    try:
        require_runtime(target.name, precision)
    except RunFailed as e:
        return str(e)
    return None


def plan(o: BenchmarkOptions, run_name: str) -> list[Planned]:
    """The rows, in order: every target (``--targets``, else :func:`default_targets`) at every
    precision (``--precisions``, else the target's). Bad names are one PncdError line (exit 2)."""
    from pncd.bench.artifact import artifact_name
    from pncd.targets.base import PRECISIONS
    from pncd.targets.registry import TARGETS

    asked = o.targets is not None
    targets = list(o.targets or default_targets())
    for t in targets:
        if t not in TARGETS:
            raise PncdError(f"--targets: unknown target {t!r}; use some of {', '.join(default_targets())}")
        if t in NOT_HERE:
            raise PncdError(f"--targets {t}: pncd benchmark measures on this machine; export with pncd export --target "
                            f"{t} and bench on the device with pncd bench --device jetson --host HOST")
    for p in o.precisions or ():
        if p not in PRECISIONS:
            raise PncdError(f"--precisions: unknown precision {p!r}; use some of {', '.join(PRECISIONS)}")
    trt_why = tensorrt_here() if any(TARGETS.get(t).runtime == "tensorrt" for t in targets) else None
    rows = []
    for t in targets:
        spec = TARGETS.get(t)
        for p in o.precisions or spec.precisions:
            row = Planned(artifact_name(run_name, t, p), t, p)
            if p not in spec.precisions:
                row.skip = f"target {t} has no precision {p}"
            elif spec.runtime == "tensorrt":
                row.device = "cpu" if trt_why else "cuda"
                if trt_why and not asked:
                    row.skip = f"{trt_why}; --targets {t} checks and benches its ONNX on ONNX Runtime instead"
            elif not asked:
                row.skip = _missing(spec, p)
            rows.append(row)
    return rows


def validate(o: BenchmarkOptions) -> Path:
    """Option and input errors before anything is written; returns the run's checkpoint path."""
    from pncd.checkpoint import CONFIG, checkpoint_path

    run = Path(o.run)
    if not run.is_dir() or not (run / CONFIG).is_file():
        raise PncdError(f"{run}: not a run directory (no {CONFIG}); pass a folder written by pncd train or pncd distill")
    ckpt = checkpoint_path(run)
    if o.split not in SPLITS:
        raise PncdError(f"--split {o.split!r} is unknown; use one of {', '.join(SPLITS)}")
    if o.data is not None and not Path(o.data).is_dir():
        raise PncdError(f"--data {o.data}: no such directory")
    if o.baseline is not None:
        from pncd.bench.gate import load_baseline

        load_baseline(o.baseline)  # a missing or malformed baseline: one line, now
    return ckpt


def run_benchmark(o: BenchmarkOptions, log: Log | None = None) -> BenchmarkResult:
    """Export, check and bench every planned artifact of ``o.run`` into ``o.out`` (continuing
    what is there), gate them and write the table; see the module's docstring. Holds the lock of
    ``o.out`` throughout (:func:`pncd.outlock.out_lock`)."""
    from pncd.outlock import out_lock

    log = log or _stderr
    ckpt = validate(o)
    with out_lock(o.out, "pncd benchmark"):
        return _run(o, ckpt, log)


def _run(o: BenchmarkOptions, ckpt: Path, log: Log) -> BenchmarkResult:
    from pncd.apps import benchmark_table as tbl
    from pncd.io import claim_dir, sha256_file

    root = claim_dir(o.out, "benchmark", FILES, protect=(o.run, o.data))
    planned = plan(o, Path(o.run).resolve().name)
    sha = sha256_file(ckpt)
    log(f"benchmark of {o.run} ({ckpt.name}, SHA-256 {sha[:12]}…): {len(planned)} artifacts into {root}")
    state = _State(o, root, sha, log)
    for i, p in enumerate(planned, 1):
        state.one(p, f"[{i}/{len(planned)}] {p.name}")
    return tbl.finish(o, root, planned, state.reports, state.failures, state.reused, ckpt, sha, log)


class _State:
    """The artifacts of one benchmark, measured one at a time; the shared ONNX made on first need."""

    def __init__(self, o: BenchmarkOptions, root: Path, sha: str, log: Log) -> None:
        self.o, self.root, self.sha, self.log = o, root, sha, log
        self.onnx: Path | None = None
        self.onnx_error: Exception | None = None  # the shared ONNX's export failed: every export fails with it
        self.fatal: PncdError | None = None  # the run itself is unusable (bad input): the benchmark stops
        self.reports: dict[str, Path] = {}  # name -> its bench report folder
        self.failures: dict[str, str] = {}  # name -> reason
        self.reused: set[str] = set()

    def one(self, p: Planned, head: str) -> None:
        if p.skip:
            self.log(f"{head}: skipped: {p.skip}")
            return
        stage = "export"
        try:
            exp_dir, fresh = self.export(p, head)
            stage = "bench"
            rep_dir, benched = self.bench(p, exp_dir, head)
        except Exception as e:  # any failure is this row's (a runtime's own error types included); ^C stops all
            if self.fatal is not None:
                raise self.fatal from None
            text = " ".join(str(e).split()) or type(e).__name__
            reason = f"{stage} failed: {text if isinstance(e, PncdError) else f'{type(e).__name__}: {text}'}"
            self.failures[p.name] = reason
            self.log(f"{head}: FAILED, {reason}")
            return
        self.reports[p.name] = rep_dir
        if not fresh and not benched:
            self.reused.add(p.name)
            self.log(f"{head}: reused (its export and bench in {self.root} match this run and these settings)")

    def export_options(self, p: Planned) -> Any:
        from pncd.export.options import ExportOptions

        return ExportOptions(target=p.target, precision=p.precision, out=str(self.root / "exports" / p.name),
                             data=self.o.data, calib_size=self.o.calib_size, parity_images=self.o.parity_images,
                             strict=self.o.strict, force=True, onnx=str(self.shared_onnx()))

    def export(self, p: Planned, head: str) -> tuple[Path, bool]:
        """(the artifact folder, whether it was exported now)."""
        from pncd.export.pipeline import export_run

        out = self.root / "exports" / p.name
        if export_matches(out, p, self.o, self.sha):
            return out, False
        opts = self.export_options(p)
        self.log(f"{head}: exporting {p.target} {p.precision}")
        export_run(self.o.run, opts, log=lambda m: self.log(f"{head}: {m}"))
        return out, True

    def shared_onnx(self) -> Path:
        """``OUT/onnx/model.onnx``: the run's ONNX, exported on first need (reused when it was
        exported from this checkpoint)."""
        from pncd.export.options import ExportOptions
        from pncd.export.shared_onnx import ONNX, RECORD, write_shared_onnx
        from pncd.io import read_json

        if self.onnx_error is not None:
            raise self.onnx_error
        if self.onnx is None:
            d = self.root / "onnx"
            rec = read_json(d / RECORD) if (d / RECORD).is_file() and (d / ONNX).is_file() else {}
            if (rec.get("source") or {}).get("checkpoint_sha256") != self.sha:
                opts = ExportOptions(target="onnxruntime", precision="fp32", out=str(d), data=self.o.data)
                try:
                    write_shared_onnx(self.o.run, opts, d, log=lambda m: self.log(f"[onnx] {m}"))
                except Exception as e:
                    self.onnx_error = e
                    if isinstance(e, PncdError) and not isinstance(e, RunFailed):
                        self.fatal = e  # the run cannot be loaded or exported at all: one line, exit 2
                    raise
            self.onnx = d / ONNX
        return self.onnx

    def bench(self, p: Planned, exp_dir: Path, head: str) -> tuple[Path, bool]:
        """(the bench report folder, whether it was benched now)."""
        from pncd.bench.options import BenchOptions
        from pncd.bench.pipeline import run as run_bench
        from pncd.io import read_json

        out = self.root / "reports" / p.name
        key = bench_key(self.o, p, exp_dir)
        old = read_json(out / "report.json") if (out / "report.json").is_file() else {}
        if (old.get("options") or {}).get("benchmark_key") == key:
            return out, False
        o = self.o
        opts = BenchOptions(data=o.data, split=o.split, device=p.device, out=out, force=True, warmup=o.warmup,
                            iters=o.iters, interleave_rounds=o.interleave_rounds, batch=o.batch, n_boot=o.n_boot,
                            seed=o.seed, overlays=o.overlays, anonymize=o.anonymize, threads=o.threads,
                            progress=o.progress)
        self.log(f"{head}: benching it against its torch reference on {p.device}")
        run_bench([exp_dir], opts, log=lambda m: self.log(f"{head}: {m}"), params={"benchmark_key": key})
        return out, True


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def export_matches(out: Path, p: Planned, o: BenchmarkOptions, sha: str) -> bool:
    """Whether ``out`` holds an intact export of this target and precision from the checkpoint
    ``sha`` with the export settings of ``o`` (then it is reused)."""
    from pncd.export.manifest import MANIFEST, verify
    from pncd.io import read_json

    if not (out / MANIFEST).is_file():
        return False
    try:
        man = read_json(out / MANIFEST)
        if not isinstance(man, dict) or verify(out, extras=False):
            return False
    except (OSError, ValueError, PncdError):
        return False
    have = man.get("options") or {}
    want = {"data": o.data, "calib_size": o.calib_size, "parity_images": o.parity_images, "strict": o.strict}
    return (man.get("target") == p.target and man.get("precision") == p.precision
            and (man.get("source") or {}).get("checkpoint_sha256") == sha
            and _json({k: have.get(k) for k in want}) == _json(want))


def bench_key(o: BenchmarkOptions, p: Planned, exp_dir: Path) -> str:
    """The SHA-256 of what a bench report must have been made with to be reused: the bench
    settings, the device and the artifact's manifest (its SHA-256, so a re-export is benched again)."""
    from pncd.export.manifest import MANIFEST
    from pncd.io import sha256_file

    key = {**o.key(), "device": p.device, "manifest_sha256": sha256_file(exp_dir / MANIFEST)}
    return hashlib.sha256(_json(key).encode()).hexdigest()


def _stderr(msg: str) -> None:
    from pncd.console import warn

    warn(msg)
