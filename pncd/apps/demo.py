"""``pncd demo``: the whole pipeline on the built-in synthetic phantoms, in a few CPU minutes.

teacher (train) -> student (distill with PNCD) -> eval -> ``pncd benchmark`` of the student
(:func:`pncd.apps.benchmark.run_benchmark`: export to ONNX Runtime and OpenVINO in
FP32/FP16/INT8, bench each against the torch reference, gate, one table).

Every stage writes into ``OUT`` and is skipped when its output is already there (the benchmark
reuses each artifact already exported and benched), so a demo that was interrupted continues
where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pncd.distill.options import DistillOptions, DistillRun
from pncd.options import DataOptions, TrainOptions, TrainRun
from pncd.optspec import cli

DEFAULT_EXPORTS = ("onnxruntime:fp32", "onnxruntime:fp16", "onnxruntime:int8", "openvino:fp32", "openvino:fp16",
                   "openvino:int8")


@dataclass
class DemoRecipe:
    """What the demo trains, distils, exports and benches (``pncd demo``'s options: ``metadata=cli(...)``)."""

    data: str | None = field(default=None, metadata=cli(
        "Data set (default: the built-in synthetic phantoms, --cases of them).", path="dir"))
    teacher: str = field(default="attention_unet", metadata=cli("Teacher network (trained first)."))
    student: str = field(default="enet", metadata=cli(
        "Student network (distilled): one of the paper's, enet, mobilenetv2 or resnet18."))
    size: int = field(default=64, metadata=cli(low=16))
    batch: int = 8
    # 600 teacher and 1,000 student steps at 64x64: 2.5 minutes in all on an idle 2-core CPU. With
    # 240/320 steps (1.3 minutes) the student's Dice was 0.36 and INT8 kept 80-90% of it; with
    # 500/600 OpenVINO INT8 kept 97%; with these (and 128 calibration images) every export keeps
    # >= 99% on the test split (measured on an AMD EPYC with AVX-512).
    teacher_epochs: int = field(default=12, metadata=cli(low=1))
    student_epochs: int = field(default=20, metadata=cli(low=1))
    steps_per_epoch: int = field(default=50, metadata=cli(low=1))
    # ENet at 64x64 on the phantoms: with Adam 1e-3 its val Dice is 0.10 after 400 steps, with
    # 5e-3 0.42 after 200 (measured on 2 CPU cores); the teacher trains at 2e-3.
    teacher_lr: float = field(default=2e-3, metadata=cli(low=0, low_open=True))
    student_lr: float = field(default=5e-3, metadata=cli(low=0, low_open=True))
    lesion_fraction: float = 0.5
    seed: int = field(default=0, metadata=cli(low=0))
    # The built-in phantoms with 96 cases (68 train, 14 val, 14 test) rather than the default 24: on
    # 16 training cases the demo's networks overfit, so the student that training picks, and so the
    # INT8 gate on 4 test cases, came down to chance (seed 0 on an Intel Xeon: student val Dice 0.40,
    # INT8 98.7% / 99.0%, FAIL; seed 1: 0.53, PASS); on 96 cases the same seed 0 reached 0.65, and
    # on its 14 test cases ONNX Runtime INT8 kept 99.3%, OpenVINO INT8 100.1%: PASS.
    cases: int = field(default=96, metadata=cli(
        "Cases of the built-in phantoms (generated once into the cache; 70% train, 15% val, 15% test).", low=3))
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
    from pncd.apps.benchmark import BenchmarkOptions, run_benchmark
    from pncd.distill.run import distill
    from pncd.evaluation.run import evaluate_run
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

    stage("1/3 train teacher", teacher / "eval-val" / "metrics.json", train_teacher)
    stage("2/3 distil student", student / "eval-val" / "metrics.json", distil_student)

    echo("[3/3 benchmark] export, check and bench every artifact of the student, then gate")
    targets = tuple(dict.fromkeys(spec.split(":")[0] for spec in r.exports))
    precisions = tuple(dict.fromkeys(spec.split(":")[1] for spec in r.exports))
    bench = run_benchmark(BenchmarkOptions(run=student, targets=targets, precisions=precisions, out=out / "benchmark",
                                           split="test", calib_size=r.calib_size, iters=r.bench_iters, n_boot=r.n_boot,
                                           seed=r.seed, baseline=baseline), log=echo)
    echo(f"report: {bench.out / 'benchmark.md'} (each artifact's bench report under {bench.out / 'reports'})")
    echo("")
    echo(bench.table)
    echo(bench.verdict)
    return {"teacher": teacher, "student": student, "benchmark": bench.out, "gate_ok": bench.gate_ok,
            "gate_rows": bench.gate_rows, "export_failures": bench.failures}
