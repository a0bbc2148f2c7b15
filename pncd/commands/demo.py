"""``pncd demo``: the click layer over :func:`pncd.apps.demo.run_pipeline`."""

from __future__ import annotations

import click

from pncd.apps.demo import DemoRecipe
from pncd.commands.config import config_option
from pncd.errors import PncdError


@click.command("demo")
@config_option
@click.option("--out", type=click.Path(file_okay=False), default="pncd-demo", show_default=True)
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Data set (default: the built-in synthetic phantoms, --cases of them).")
@click.option("--cases", type=click.IntRange(3), default=DemoRecipe.cases, show_default=True,
              help="Cases of the built-in phantoms (generated once into the cache; 70% train, 15% val, 15% test).")
@click.option("--teacher", default=DemoRecipe.teacher, show_default=True, help="Teacher network (trained first).")
@click.option("--student", default=DemoRecipe.student, show_default=True,
              help="Student network (distilled): one of the paper's, enet, mobilenetv2 or resnet18.")
@click.option("--size", type=click.IntRange(16), default=DemoRecipe.size, show_default=True)
@click.option("--teacher-epochs", type=click.IntRange(1), default=DemoRecipe.teacher_epochs, show_default=True)
@click.option("--student-epochs", type=click.IntRange(1), default=DemoRecipe.student_epochs, show_default=True)
@click.option("--steps-per-epoch", type=click.IntRange(1), default=DemoRecipe.steps_per_epoch, show_default=True)
@click.option("--teacher-lr", type=click.FloatRange(0, min_open=True), default=DemoRecipe.teacher_lr, show_default=True)
@click.option("--student-lr", type=click.FloatRange(0, min_open=True), default=DemoRecipe.student_lr, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--baseline", type=click.Path(dir_okay=False, exists=True), default=None, help="Also gate against this committed baseline.")
def demo_command(config: str | None, out: str, data: str | None, cases: int, teacher: str, student: str, size: int, teacher_epochs: int,
                 student_epochs: int, steps_per_epoch: int, teacher_lr: float, student_lr: float, seed: int,
                 baseline: str | None) -> int:
    """Run the whole pipeline on the synthetic phantoms (or --data): train a teacher, distil a
    student, export it (ONNX Runtime and OpenVINO, FP32/FP16/INT8), bench it and gate it.

    Stages already finished in --out are skipped, so an interrupted demo continues. The last
    lines are a table of the artifacts (latency, speed-up over torch, Dice kept, gate) and one
    verdict line; the exit status is 1 when an export misses the gate (each failure in words).
    About 5 minutes on an idle 2-core CPU (4 min 52 s measured on an Intel Xeon).

    \b
    Example:
      pncd demo --out pncd-demo
      pncd demo --out demo-lgg --data path/to/lgg-flair --size 128 --teacher-epochs 6
    """
    if data is not None and cases != DemoRecipe.cases:
        raise PncdError("--cases sets the built-in phantoms' size; it does not go with --data")
    recipe = DemoRecipe(data=data, cases=cases, teacher=teacher, student=student, size=size, teacher_epochs=teacher_epochs,
                        student_epochs=student_epochs, steps_per_epoch=steps_per_epoch, teacher_lr=teacher_lr,
                        student_lr=student_lr, seed=seed)
    from pncd.apps.demo import run_pipeline

    result = run_pipeline(recipe, out, baseline, echo=click.echo)
    # Exit 1 when an export misses the gate or could not be built: the verdict line says which.
    return 0 if result["gate_ok"] and not result["export_failures"] else 1
