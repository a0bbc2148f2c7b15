"""BenchOptions is the one definition of pncd bench's options: the click options come from it,
parsing gives it back, the Jetson side shares its defaults; bad options fail before any work."""

from __future__ import annotations

from dataclasses import MISSING, fields

import click
import pytest

from pncd.commands.bench import bench_command
from pncd.bench.options import BenchOptions
from pncd.errors import PncdError


def _params() -> dict[str, click.Parameter]:
    return {p.name: p for p in bench_command.params}


def test_every_cli_field_is_one_click_option_with_its_default():
    params = _params()
    cli_fields = [f for f in fields(BenchOptions) if "cli" in f.metadata]
    assert {f.name for f in fields(BenchOptions)} - {f.name for f in cli_fields} == {"progress"}
    for f in cli_fields:
        spec = f.metadata["cli"]
        p = params[spec.param or f.name]
        assert p.opts == [spec.flag or "--" + f.name.replace("_", "-")], f.name
        if isinstance(f.default, bool):
            assert p.is_flag, f.name  # --force, --no-reference, --no-verify: off unless given (parsing test)
        elif spec.required:
            assert p.required, f.name
        else:
            assert p.default == f.default or (p.multiple and tuple(p.default or ()) == f.default), f.name
        if spec.choices:
            assert tuple(p.type.choices) == spec.choices, f.name
        if spec.low is not None:
            assert p.type.min == spec.low, f.name
    # the command's own options besides the generated ones
    assert set(params) - {f.metadata["cli"].param or f.name for f in cli_fields} == {"artifacts", "gate_baseline",
                                                                                       "config"}


def test_parsing_gives_the_dataclass_back():
    ctx = bench_command.make_context("bench", ["a", "--out", "r", "--no-reference", "--warmup", "3", "--ssh-option",
                                               "-p 22", "--ssh-option", "-i k", "--device", "jetson"])
    opts = BenchOptions.from_params(ctx.params)
    assert opts == BenchOptions(out=opts.out, reference=False, warmup=3, ssh_options=("-p 22", "-i k"),
                                device="jetson")
    assert str(opts.out) == "r" and opts.verify and opts.iters == 100
    plain = BenchOptions.from_params(bench_command.make_context("bench", ["--out", "r"]).params)
    assert plain == BenchOptions(out=plain.out)  # the CLI's defaults are the dataclass's


def test_jetson_options_share_the_bench_defaults():
    from pncd.bench.sites import jetson_options
    from pncd.targets.jetson import JetsonOptions

    bench_defaults = {f.name: f.default for f in fields(BenchOptions) if f.default is not MISSING}
    shared = [f for f in fields(JetsonOptions) if f.name in bench_defaults]
    assert {f.name for f in shared} >= {"warmup", "iters", "duration", "batch", "accuracy_batch", "tegrastats"}
    for f in shared:
        assert f.default == bench_defaults[f.name], f.name
    j = jetson_options(BenchOptions(host="h", warmup=2, remote_backend="onnxruntime", engine_cache="/c",
                                    ssh_options=["-p", "2"]))
    assert (j.host, j.warmup, j.backend, j.cache_dir, j.ssh_options) == ("h", 2, "onnxruntime", "/c", ("-p", "2"))


@pytest.mark.parametrize("kw, msg", [
    (dict(host="me@x"), "--host only applies to --device jetson"),
    (dict(device="tpu"), "unknown --device 'tpu'"),
])
def test_bad_options_fail_before_any_work(tmp_path, kw, msg):
    from pncd.bench.pipeline import run

    with pytest.raises(PncdError, match=msg):
        run([tmp_path / "nothing-read-yet"], BenchOptions(out=tmp_path / "r", **kw), log=lambda m: None)
    with pytest.raises(PncdError, match="no artifact given"):
        run([], BenchOptions(out=tmp_path / "r"), log=lambda m: None)
    assert not (tmp_path / "r").exists()


def test_not_an_artifact_is_one_line(tmp_path):
    from pncd.bench.artifact import Artifact

    with pytest.raises(PncdError, match="not an exported artifact"):
        Artifact.read(tmp_path)


def test_the_host_passes_every_argument_the_device_runner_takes(capsys):
    """The Jetson runner runs without pncd on the device, so it has no defaults of its own: every
    value of ``run`` is required, and the host passes each one, from the bench's options."""
    from pncd.bench.sites import jetson_options
    from pncd.targets import jetson_runner
    from pncd.targets.jetson import runner_args

    o = BenchOptions(warmup=3, iters=7, duration=1.5, batch=4, accuracy_batch=2, tegrastats="off",
                     remote_backend="onnxruntime", engine_cache="/c")
    argv = runner_args("m.onnx", "int8", jetson_options(o))
    args = jetson_runner.parser().parse_args(argv)
    assert (args.warmup, args.iters, args.duration, args.batch, args.accuracy_batch, args.tegrastats) == (3, 7, 1.5, 4, 2,
                                                                                                          "off")
    assert (args.backend, args.cache_dir, args.precision, args.threads) == ("onnxruntime", "/c", "int8", 0)
    run_parser = jetson_runner.parser()._subparsers._group_actions[0].choices["run"]
    values = [a for a in run_parser._actions if a.option_strings and a.nargs != 0]
    assert values and all(a.required and a.default is None for a in values), [a.dest for a in values]
    for a in values:  # leaving any one out is refused (argparse's exit 2)
        i = argv.index(a.option_strings[0])
        with pytest.raises(SystemExit) as e:
            jetson_runner.parser().parse_args(argv[:i] + argv[i + 2:])
        assert e.value.code == 2, a.dest
    assert "required" in capsys.readouterr().err
