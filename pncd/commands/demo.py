"""``pncd demo``: the click layer over :func:`pncd.apps.demo.run_pipeline` (its options: the
fields of :class:`pncd.apps.demo.DemoRecipe` and :class:`DemoPlaces`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import click

from pncd.apps.demo import DemoRecipe
from pncd.commands._options import options
from pncd.commands.config import config_option
from pncd.errors import PncdError
from pncd.optspec import cli, values_from


@dataclass
class DemoPlaces:
    """Where the demo writes, and the baseline it is gated against."""

    out: str = field(default="pncd-demo", metadata=cli(path="dir"))
    baseline: str | None = field(default=None, metadata=cli("Also gate against this committed baseline.", path="file",
                                                            exists=True))


@click.command("demo")
@config_option
@options(DemoPlaces, only=("out",))
@options(DemoRecipe)
@options(DemoPlaces, only=("baseline",))
def demo_command(config: str | None, out: str, baseline: str | None, **params: Any) -> int:
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
    recipe = DemoRecipe(**values_from(DemoRecipe, params))
    if recipe.data is not None and recipe.cases != DemoRecipe.cases:
        raise PncdError("--cases sets the built-in phantoms' size; it does not go with --data")
    from pncd.apps.demo import run_pipeline

    result = run_pipeline(recipe, out, baseline, echo=click.echo)
    # Exit 1 when an export misses the gate or could not be built: the verdict line says which.
    return 0 if result["gate_ok"] and not result["export_failures"] else 1
