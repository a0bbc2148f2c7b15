"""``pncd benchmark``: the click layer over :func:`pncd.apps.benchmark.run_benchmark`.

Its options are generated from :class:`pncd.apps.benchmark.BenchmarkOptions`
(:mod:`pncd.commands._options`); ``--config`` is the command's own.
"""

from __future__ import annotations

from typing import Any

import click

from pncd.apps.benchmark import BenchmarkOptions
from pncd.commands._options import options
from pncd.commands.config import config_option


@click.command("benchmark", context_settings={"max_content_width": 100})
@config_option
@click.argument("run", type=click.Path(file_okay=False))
@options(BenchmarkOptions)
@click.pass_context
def benchmark_command(ctx: click.Context, config: str | None, run: str, **params: Any) -> None:
    """Export RUN to every target and precision, check and bench each artifact against torch,
    and print one table: runtime, what it computed in, latency, speed-up, Dice kept, gate.

    The ONNX is exported once and every artifact is built from it. A failed export or bench is
    a row with its reason (the others go on); targets this machine cannot run are rows saying
    why. Rerun the same command to continue a killed benchmark: what OUT already holds for this
    checkpoint and these settings is reused. Writes OUT/benchmark.md, OUT/benchmark.json and
    OUT/report.json (pncd gate reads it). Exit status 1 when an artifact failed or missed the
    gate.

    \b
    Examples:
      pncd benchmark runs/enet-pncd --out bench-enet
      pncd benchmark runs/enet-pncd --targets onnxruntime,openvino --precisions fp32,int8 \\
          --data path/to/lgg-flair --out bench-enet-lgg
      pncd benchmark runs/enet-pncd --out bench-enet --baseline baselines/enet.json
    """
    from pncd.apps.benchmark import run_benchmark

    opts = BenchmarkOptions.from_params(run, params)
    result = run_benchmark(opts, log=lambda m: click.echo(m, err=True))
    click.echo(result.table)
    click.echo(result.verdict)
    click.echo(f"written: {result.out / 'benchmark.md'} (JSON: benchmark.json; each artifact's report under reports/)")
    if not result.ok:
        ctx.exit(1)
