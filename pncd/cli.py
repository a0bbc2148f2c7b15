"""The ``pncd`` command line: a thin click layer over the library.

Subcommands live next to the code they drive and are imported only when run, so
``pncd --help`` works without OpenVINO or TensorRT installed.
"""

from __future__ import annotations

import importlib
import sys

import click

from pncd import __version__
from pncd.errors import PncdError

# name -> "module:attribute" of a click command; imported on first use.
COMMANDS: dict[str, str] = {
    "demo": "pncd.pipeline:demo_command",
    "data": "pncd.data.cli:data_group",
    "models": "pncd.models.cli:models_command",
    "train": "pncd.train:train_command",
    "eval": "pncd.evaluate:eval_command",
    "distill": "pncd.distill.engine:distill_command",
    "ablate": "pncd.distill.ablate:ablate_command",
    "export": "pncd.export.cli:export_command",
    "bench": "pncd.bench.cli:bench_command",
    "gate": "pncd.bench.gate:gate_command",
}

SHORT_HELP = {
    "demo": "Whole pipeline on the built-in synthetic data: train, distil, export, bench, gate.",
    "data": "Inspect data sets (check) and write the synthetic default (synth).",
    "models": "List the registered networks with parameter counts and taps.",
    "train": "Train one network alone (a teacher or a student baseline).",
    "eval": "Evaluate a run on a split: metrics.json and overlay PNGs.",
    "distill": "Distil a frozen teacher into a student with PNCD's four losses.",
    "ablate": "Run the PNCD module ablation grid (the paper's Table 3).",
    "export": "Export a run to ONNX / ONNX Runtime / OpenVINO / TensorRT (FP32, FP16, INT8).",
    "bench": "Latency and accuracy of exported artifacts against the torch reference.",
    "gate": "Check a bench report against accuracy (and latency) rules and a baseline.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            why = str(e)  # `e` itself is unbound once this block ends
            # A stage that is not built (or whose module failed to import) still shows in --help.
            # It takes any arguments, so that the user sees why, not "No such option".
            @click.command(name=name, help=SHORT_HELP.get(name, ""),
                           context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def unavailable(args: tuple[str, ...]) -> None:
                raise PncdError(f"'pncd {name}' is unavailable: {why}")

            return unavailable

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, SHORT_HELP.get(n, "")) for n in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pncd")
def cli() -> None:
    """pncd: distil a heavy medical segmentation network into a small student, export it and
    measure it on the device.

    \b
    Examples:
      pncd demo --out pncd-demo                  # the whole pipeline on synthetic data
      pncd data check ../shared/data/lgg-flair   # inspect a data set
      pncd train --model dcsaunet --data DIR --out runs/teacher
      pncd distill --teacher runs/teacher --student enet --data DIR --out runs/enet-pncd
      pncd export runs/enet-pncd --target openvino --precision int8 --out exports/enet-ov-int8
      pncd bench exports/enet-ov-int8 --data DIR --split test --out reports/enet
    """


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a PncdError becomes one line on stderr and exit status 1."""
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of exiting.
        rv = cli.main(args=argv, prog_name="pncd", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except PncdError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    else:
        sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
