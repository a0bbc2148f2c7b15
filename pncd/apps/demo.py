"""``pncd demo``: the whole pipeline on the built-in synthetic phantoms, in a few CPU minutes.

teacher (train) -> student (distill with PNCD) -> eval -> export (ONNX Runtime and OpenVINO,
FP32/FP16/INT8) -> bench (latency + Dice against the torch reference) -> gate.

Every stage writes into ``OUT`` and is skipped when its output is already there, so a demo
that was interrupted continues where it stopped. The same function drives the CI accuracy
gate (``tests/test_pipeline_gate.py``) with a smaller recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from pncd.distill.options import DistillOptions, DistillRun
from pncd.errors import PncdError, RunFailed
from pncd.options import DataOptions, TrainOptions, TrainRun

DEFAULT_EXPORTS = ("onnxruntime:fp32", "onnxruntime:fp16", "onnxruntime:int8", "openvino:fp32", "openvino:fp16",
                   "openvino:int8")


@dataclass
class DemoRecipe:
    data: str | None = None
    teacher: str = "attention_unet"
    student: str = "enet"
    size: int = 64
    batch: int = 8
    # 600 teacher and 1,000 student steps at 64x64: 2.5 minutes in all on an idle 2-core CPU. With
    # 240/320 steps (1.3 minutes) the student's Dice was 0.36 and INT8 kept 80-90% of it; with
    # 500/600 OpenVINO INT8 kept 97%; with these (and 128 calibration images) every export keeps
    # >= 99% on the test split (measured on an AMD EPYC with AVX-512).
    teacher_epochs: int = 12
    student_epochs: int = 20
    steps_per_epoch: int = 50
    # ENet at 64x64 on the phantoms: with Adam 1e-3 its val Dice is 0.10 after 400 steps, with
    # 5e-3 0.42 after 200 (measured on 2 CPU cores); the teacher trains at 2e-3.
    teacher_lr: float = 2e-3
    student_lr: float = 5e-3
    lesion_fraction: float = 0.5
    seed: int = 0
    # The built-in phantoms with 96 cases (68 train, 14 val, 14 test) rather than the default 24: on
    # 16 training cases the demo's networks overfit, so the student that training picks, and so the
    # INT8 gate on 4 test cases, came down to chance (seed 0 on an Intel Xeon: student val Dice 0.40,
    # INT8 98.7% / 99.0%, FAIL; seed 1: 0.53, PASS); on 96 cases the same seed 0 reached 0.65, and
    # on its 14 test cases ONNX Runtime INT8 kept 99.3%, OpenVINO INT8 100.1%: PASS.
    cases: int = 96
    exports: tuple[str, ...] = DEFAULT_EXPORTS
    calib_size: int = 128
    bench_iters: int = 50
    n_boot: int = 1000
    distill: DistillOptions = field(default_factory=DistillOptions)  # pncd distill's defaults

    def train_options(self, epochs: int, lr: float) -> TrainOptions:
        return TrainOptions(epochs=epochs, lr=lr, batch=self.batch, steps_per_epoch=self.steps_per_epoch,
                            lesion_fraction=self.lesion_fraction, seed=self.seed)


def _continue(run: Path) -> tuple[bool, bool]:
    """(resume, force): resume a run that has a last state, replace one that has none (an
    interrupted first epoch)."""
    resume = (run / "last_state.pt").is_file()
    return resume, run.exists() and not resume


def run_pipeline(recipe: DemoRecipe, out: str | Path, baseline: str | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) every stage; returns paths and the gate verdict."""
    from pncd.bench.gate import run_gate
    from pncd.bench.options import BenchOptions
    from pncd.bench.pipeline import run as run_bench
    from pncd.distill.run import distill
    from pncd.evaluation.run import evaluate_run
    from pncd.export.pipeline import ExportOptions, export_run
    from pncd.training.run import train

    from pncd.data.loading import synthetic_root
    from pncd.io import check_parents
    from pncd.runtime import apply_threads

    out = check_parents(out)  # --out under a file: one line, not the OS's "File exists"
    out.mkdir(parents=True, exist_ok=True)
    r = recipe
    apply_threads(None)  # torch's threads as pncd train/distill/eval set them without --threads
    data = DataOptions(data=r.data if r.data is not None else str(synthetic_root(r.cases)), size=r.size)
    teacher, student = out / "runs" / r.teacher, out / "runs" / f"{r.student}-pncd"

    def stage(name: str, done: Path, fn: Callable[[], Any]) -> None:
        if done.exists():
            echo(f"[{name}] done already ({done})")
            return
        echo(f"[{name}] ...")
        fn()

    def train_teacher() -> None:
        resume, force = _continue(teacher)
        train(TrainRun(out=teacher, model=r.teacher, data=data, train=r.train_options(r.teacher_epochs, r.teacher_lr),
                       resume=resume, force=force))
        evaluate_run(teacher, "val", force=True, echo=echo)

    def distil_student() -> None:
        opts = r.train_options(r.student_epochs, r.student_lr)  # gradient clipping: distill's default
        resume, force = _continue(student)
        distill(DistillRun(out=student, teacher=str(teacher), student=r.student, data=data, train=opts,
                           distill=r.distill, resume=resume, force=force))
        evaluate_run(student, "val", force=True, echo=echo)

    stage("1/6 train teacher", teacher / "eval-val" / "metrics.json", train_teacher)
    stage("2/6 distil student", student / "eval-val" / "metrics.json", distil_student)

    artifacts, export_failures = [], {}
    for spec in r.exports:
        target, precision = spec.split(":")
        dest = out / "exports" / f"{r.student}-{target}-{precision}"
        opts = ExportOptions(target=target, precision=precision, out=str(dest), calib_size=r.calib_size, force=True)
        try:
            stage(f"3/6 export {target} {precision}", dest / "manifest.json", partial(export_run, student, opts, log=echo))
            artifacts.append(dest)
        except PncdError as e:  # e.g. a parity check the briefly trained student does not meet: report it, go on
            export_failures[spec] = str(e)
            echo(f"[3/6 export {target} {precision}] FAILED, left out of the bench: {e}")
    if not artifacts:
        raise RunFailed(f"every export failed; see the messages above ({out / 'exports'})")

    report = out / "report"
    bench_opts = BenchOptions(split="test", out=report, force=True, iters=r.bench_iters, n_boot=r.n_boot, seed=r.seed)
    stage("4/6 bench", report / "report.json", lambda: run_bench(artifacts, bench_opts))

    echo("[5/6 gate]")
    warnings: list[str] = []
    ok, rows = run_gate(report / "report.json", baseline, warnings=warnings)
    for w in warnings:
        echo(f"warning: {w}")
    echo(f"[6/6] report: {report / 'report.md'}  (JSON: {report / 'report.json'}, plot and overlays beside it)")
    for spec, msg in export_failures.items():
        echo(f"note: export {spec} was left out: {msg}")
    echo("")
    echo(summary_table(report / "report.json", rows))
    echo(verdict_line(ok, rows, export_failures))
    return {"teacher": teacher, "student": student, "artifacts": artifacts, "report": report, "gate_ok": ok, "gate_rows": rows,
            "export_failures": export_failures}


def summary_table(report_json: Path, rows: list[dict[str, Any]]) -> str:
    """Markdown table of the report's entries: latency, speed-up over torch, Dice kept, verdict."""
    from pncd.io import read_json

    rep = read_json(report_json)
    by_id = {e["id"]: e for e in rep["entries"]}
    verdicts: dict[str, list[str]] = {}
    for r in rows:
        verdicts.setdefault(r["entry"], []).append(r["status"])
    lines = ["| artifact | computes in | median ms | speed-up vs torch | Dice | Dice kept | gate |",
             "|---|---|---|---|---|---|---|"]
    for e in rep["entries"]:
        ref = by_id.get(e.get("ref_id")) if e.get("ref_id") else None
        lat, dice = e.get("latency_ms_median"), e.get("dice")
        speed = (ref["latency_ms_median"] / lat) if ref and lat and ref.get("latency_ms_median") else None
        kept = e.get("dice_rel")  # the bench's own artifact / reference Dice ratio
        status = verdicts.get(e["key"], [])
        gate = ("FAIL" if "fail" in status else "pass" if "pass" in status else "–") if e["kind"] == "artifact" else "reference"
        lines.append(f"| {e['name']} | {e.get('compute_precision') or e.get('precision')} | "
                     f"{'–' if lat is None else f'{lat:.2f}'} | {'1.00x' if ref is None else '–' if speed is None else f'{speed:.2f}x'} | "
                     f"{'–' if dice is None else f'{dice:.4f}'} | {'100%' if ref is None else '–' if kept is None else f'{kept:.1%}'} | {gate} |")
    return "\n".join(lines)


def _limit_percent(limit: str) -> str:
    """">= 0.99" -> "99%" (the gate's ratio limits, in words)."""
    try:
        return f"{float(limit.split()[-1]):.0%}"
    except ValueError:
        return limit


def verdict_line(ok: bool, rows: list[dict[str, Any]], export_failures: dict[str, str] | None = None) -> str:
    """One line: PASS, or FAIL with each failed rule in words."""
    failed = [r for r in rows if r["status"] == "fail"]
    words = {"ref_ratio": "keeps {v:.1%} of its torch reference's Dice (needs at least {pct})",
             "dice_drop": "lost {v:.4f} Dice against the baseline (allowed {limit})",
             "voe_increase": "VOE rose by {v:.4f} over the baseline (allowed {limit})",
             "rvd_increase": "|RVD| rose by {v:.4f} over the baseline (allowed {limit})",
             "latency_ratio": "is {v:.2f}x the baseline reference latency (allowed {limit})"}
    parts = []
    for r in failed:
        text = words.get(r["rule"])
        v = r["value"]
        pct = _limit_percent(r["limit"])
        parts.append(f"{r['entry']} " + (text.format(v=v, limit=r["limit"], pct=pct)
                                         if text and v is not None else f"{r['rule']}: {r['detail'] or 'failed'}"))
    if ok and not export_failures:
        compared = sum(r["status"] == "pass" for r in rows)
        return f"verdict: PASS ({compared} checks passed: every artifact keeps its accuracy)"
    if ok:
        return f"verdict: FAIL (exports failed: {', '.join(export_failures or {})})"
    if not failed:
        return "verdict: FAIL (the gate compared nothing: no artifact had a reference or a baseline entry)"
    return "verdict: FAIL: " + "; ".join(parts)
