"""The ``pncd`` command line: a thin click layer over the library.

Subcommands live next to the code they drive and are imported only when run, so
``pncd --help`` works without OpenVINO or TensorRT installed.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from pncd import __version__
from pncd.commands._options import options
from pncd.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, PncdError, RunFailed
from pncd.options import GlobalOptions

# name -> "module:attribute" of a click command; imported on first use.
COMMANDS: dict[str, str] = {
    "demo": "pncd.commands.demo:demo_command",
    "data": "pncd.commands.data:data_group",
    "models": "pncd.commands.models:models_command",
    "train": "pncd.commands.training:train_command",
    "eval": "pncd.commands.evaluate:eval_command",
    "distill": "pncd.commands.distill:distill_command",
    "ablate": "pncd.commands.ablate:ablate_command",
    "compare": "pncd.commands.compare:compare_command",
    "qat": "pncd.commands.qat:qat_command",
    "export": "pncd.commands.export:export_command",
    "bench": "pncd.commands.bench:bench_command",
    "gate": "pncd.commands.gate:gate_command",
    "benchmark": "pncd.commands.benchmark:benchmark_command",
    "predict": "pncd.commands.predict:predict_command",
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
            @click.command(name=name, help=f"(unavailable: {why})",
                           context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def unavailable(args: tuple[str, ...]) -> None:
                raise RunFailed(f"'pncd {name}' is unavailable: {why}")

            return unavailable

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Each command's first docstring line; the click layers import no torch (tests/test_cli_help.py).
        rows = [(n, cmd.get_short_help_str(limit=200)) for n in COMMANDS
                if (cmd := self.get_command(ctx, n)) is not None]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pncd")
@options(GlobalOptions)
def cli(debug: bool, allow_telemetry: bool) -> None:
    """pncd: distil a heavy medical segmentation network into a small student, export it and
    measure it on the device.

    \b
    Examples:
      pncd demo --out pncd-demo                  # the whole pipeline on synthetic data
      pncd data check path/to/lgg-flair          # inspect a data set
      pncd train --model dcsaunet --data DIR --out runs/teacher
      pncd distill --teacher runs/teacher --student enet --data DIR --out runs/enet-pncd
      pncd export runs/enet-pncd --target openvino --precision int8 --out exports/enet-ov-int8
      pncd bench exports/enet-ov-int8 --data DIR --split test --out reports/enet
      pncd benchmark runs/enet-pncd --data DIR --out bench-enet   # every target and precision, one table

    Exit status: 0 done, 1 the work failed (a check or gate failed, training diverged, a runtime,
    device or file-system operation failed), 2 bad input (usage, options, missing or malformed
    files), 130 interrupted.

    Network: pncd connects only to a Jetson host you name (pncd bench --device jetson) and
    downloads nothing; OpenVINO's and NNCF's usage telemetry is off unless --allow-telemetry.
    """
    if debug:
        os.environ["PNCD_DEBUG"] = "1"
    if allow_telemetry:
        from pncd import telemetry

        telemetry.allow()
    from pncd.console import quiet_cpu_machine

    quiet_cpu_machine()


def _debug() -> bool:
    return os.environ.get("PNCD_DEBUG", "").strip() not in ("", "0")


def _fail(message: str, code: int) -> None:
    """One line on stderr (plus the traceback under PNCD_DEBUG=1), then exit ``code``."""
    if _debug():
        import traceback

        traceback.print_exc()
    click.echo(f"Error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def os_error_message(e: OSError) -> str:
    """An OSError as one line that names the file and says what to do."""
    import errno

    where = e.filename if e.filename is not None else ""
    if getattr(e, "filename2", None):
        where = f"{where} -> {e.filename2}"
    what = e.strerror or str(e)
    hint = {
        errno.EACCES: "check its permissions or choose another --out",
        errno.EPERM: "check its permissions or choose another --out",
        errno.EROFS: "the file system is read-only; choose another --out",
        errno.ENOSPC: "free space on the device or choose another --out",
        errno.EDQUOT: "free space on the device or choose another --out",
        errno.ENOTDIR: "a file stands where a directory is needed; choose another path",
        errno.EISDIR: "a directory stands where a file is needed; choose another path",
        errno.ENOENT: "check the path",
    }.get(e.errno or -1, "")
    return f"{where + ': ' if where else ''}{what}{'; ' + hint if hint else ''}"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every error becomes one line on stderr and an exit status.

    0 done; 1 the work failed (``RunFailed``, a failed check, an OS error, a missing package,
    an unexpected exception); 2 bad input (``PncdError``, click usage errors, malformed JSON);
    130 interrupted. ``PNCD_DEBUG=1`` (or ``pncd --debug``) adds the traceback.
    """
    import json

    try:
        # Without standalone mode click returns ctx.exit()'s code instead of exiting.
        rv = cli.main(args=argv, prog_name="pncd", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except PncdError as e:
        _fail(str(e), e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except json.JSONDecodeError as e:
        _fail(f"a JSON file is not valid JSON ({e.msg} at line {e.lineno}); fix or regenerate it", EXIT_BAD_INPUT)
    except OSError as e:
        _fail(os_error_message(e), EXIT_FAILED)
    except ImportError as e:
        _fail(f"a package is missing or broken ({e}); install it (e.g. pip install -e '.[openvino]')", EXIT_FAILED)
    except MemoryError:
        _fail("out of memory; use a smaller --batch or --size", EXIT_FAILED)
    except Exception as e:  # a bug or an unforeseen input: still one line; the traceback on request
        first = str(e).splitlines()[0] if str(e) else ""
        _fail(f"unexpected {type(e).__name__}: {first} (PNCD_DEBUG=1 or pncd --debug prints the traceback)", EXIT_FAILED)
    else:
        sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
