"""Run an ONNX model on a Jetson (host side): over SSH, or locally when pncd runs on the Jetson.

Over SSH (``--device jetson --host user@addr``)::

    1. check the remote python and numpy (one ssh call; clear message when either is missing)
    2. mktemp -d on the device; copy the runner's files (DEVICE_FILES, and this machine's
       Polygraphy as polygraphy.zip when it has one), the ONNX (+ .onnx.data) and the inputs (npz)
    3. run the runner there: TensorRT engine built or taken from the device's cache, warm-up,
       timed loop with tegrastats sampling, batch throughput, segmentation of every input
    4. copy result.json and preds.npz back; rm -rf the remote directory (in a finally, also on
       failure or Ctrl-C); the runner exits when its SSH session's stdin closes, so a dropped
       connection leaves no process behind

Without ``--host`` the same runner script runs in a subprocess on this machine.
Dice is computed on the host from the label maps that come back (see :mod:`pncd.bench.accuracy`).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pncd.errors import PncdError, RunFailed
from pncd.targets.parsers import parse_nvpmodel, summarize_tegrastats

RUNNER = Path(__file__).with_name("jetson_runner.py")
#: The runner and the pncd-free modules it imports, copied side by side to the device.
DEVICE_FILES = tuple(RUNNER.with_name(n) for n in ("jetson_runner.py", "jetson_backends.py", "timing.py", "trt_build.py"))
ERROR_PREFIX = "PNCD_RUNNER_ERROR: "

_CHECK_PYTHON = (
    "import sys\n"
    "try:\n"
    "    import numpy\n"
    "except Exception as e:\n"
    "    print('PNCD_NO_NUMPY', sys.executable, str(e).splitlines()[0]); sys.exit(3)\n"
    "print('PNCD_OK', sys.version.split()[0], numpy.__version__)\n"
)


@dataclass
class JetsonOptions:
    """How to reach the device and what to measure there (the bench CLI fills this in)."""

    host: str | None = None
    ssh_options: tuple[str, ...] = ()
    remote_python: str | None = None  # default: python3 over SSH, this interpreter locally
    backend: str = "auto"  # auto | tensorrt | onnxruntime
    cache_dir: str = "~/.cache/pncd-engines"
    warmup: int = 10
    iters: int = 100
    duration: float = 0.0
    batch: int = 8
    accuracy_batch: int = 8
    tegrastats: str = "auto"  # auto | off | PATH
    tegrastats_interval_ms: int = 100
    ort_threads: int = 0  # ONNX Runtime intra-op threads on the device (0: its default)
    connect_timeout: int = 10
    run_timeout: float = 3600.0


@dataclass
class DeviceRun:
    """What came back: the runner's result, label maps (N, H, W) uint8 and where it ran."""

    result: dict[str, Any]
    preds: np.ndarray
    where: dict[str, Any] = field(default_factory=dict)


def runner_args(onnx_name: str, precision: str, opts: JetsonOptions) -> list[str]:
    args = [
        "run", "--onnx", onnx_name, "--inputs", "inputs.npz", "--out-dir", "out",
        "--backend", opts.backend, "--precision", precision, "--cache-dir", opts.cache_dir,
        "--warmup", str(opts.warmup), "--iters", str(opts.iters), "--duration", str(opts.duration),
        "--batch", str(opts.batch), "--accuracy-batch", str(opts.accuracy_batch),
        "--tegrastats", opts.tegrastats, "--tegrastats-interval", str(opts.tegrastats_interval_ms),
        "--threads", str(opts.ort_threads),
    ]
    return args


def onnx_files(onnx: Path) -> list[Path]:
    """The ONNX file and its external-data side file when there is one."""
    data = onnx.with_name(onnx.name + ".data")
    return [onnx, data] if data.is_file() else [onnx]


def polygraphy_zip(dest: Path) -> Path | None:
    """This machine's Polygraphy (pure Python) as a zip the device runner can import, or None.

    The device uses it only when it has no Polygraphy of its own (JetPack ships TensorRT's
    Python bindings, not Polygraphy).
    """
    import importlib.util
    import zipfile

    spec = importlib.util.find_spec("polygraphy")
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg = Path(next(iter(spec.submodule_search_locations)))
    out = dest / "polygraphy.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(pkg.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                z.write(f, Path("polygraphy") / f.relative_to(pkg))
    return out


def run_on_device(
    onnx: Path, images: np.ndarray, precision: str, opts: JetsonOptions, log: Callable[[str], None] | None = None
) -> DeviceRun:
    """Time and run ``onnx`` on the Jetson named by ``opts.host`` (or here, without a host)."""
    log = log or (lambda _msg: None)
    onnx = Path(onnx)
    if not onnx.is_file():
        raise PncdError(f"{onnx}: ONNX file not found; the Jetson path needs an artifact with an .onnx file")
    with tempfile.TemporaryDirectory(prefix="pncd-jetson-") as tmp:
        tmp_path = Path(tmp)
        inputs = tmp_path / "inputs.npz"
        np.savez(inputs, images=np.ascontiguousarray(images, dtype=np.float32))
        if opts.host:
            run = _run_remote(onnx, inputs, precision, opts, tmp_path, log)
        else:
            run = _run_local(onnx, inputs, precision, opts, tmp_path, log)
    run.result["power"] = power_summary(run.result)
    env = run.result.get("env") or {}
    run.result["nvpmodel"] = parse_nvpmodel(env["nvpmodel_raw"]) if env.get("nvpmodel_raw") else None
    return run


def power_summary(result: dict[str, Any]) -> dict[str, Any] | None:
    """tegrastats lines of the timed batch-1 loop -> mean power and energy per inference."""
    ts = result.get("tegrastats") or {}
    lines = ts.get("lines") or []
    if not lines:
        return None
    loop = result.get("latency_b1") or {}
    n = len(loop.get("end_to_end_ms") or [])
    return summarize_tegrastats(lines, ts.get("interval_ms"), loop.get("duration_s"), n or None)


# ---------------------------------------------------------------------------------------------


def _runner_error(stderr: str) -> str | None:
    for line in (stderr or "").splitlines():
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX) :].strip()
    return None


def _read_outputs(out_dir: Path) -> tuple[dict[str, Any], np.ndarray]:
    try:
        result = json.loads((out_dir / "result.json").read_text())
        with np.load(out_dir / "preds.npz") as z:
            preds = z["preds"]
    except (OSError, ValueError, KeyError) as e:
        raise RunFailed(f"the device runner's outputs in {out_dir} are missing or damaged ({e})") from None
    return result, preds


def _run_local(
    onnx: Path, inputs: Path, precision: str, opts: JetsonOptions, tmp: Path, log: Callable[[str], None]
) -> DeviceRun:
    python = opts.remote_python or sys.executable
    if not Path("/etc/nv_tegra_release").exists():
        log("note: this machine is not a Jetson (no /etc/nv_tegra_release); running the device runner locally")
    for f in onnx_files(onnx):  # the runner expects the ONNX and its data side by side in its directory
        (tmp / f.name).symlink_to(f.resolve())
    polygraphy_zip(tmp)  # used where the interpreter has no Polygraphy of its own
    argv = [python, str(RUNNER), *runner_args(onnx.name, precision, opts)]
    log(f"running the device runner locally with {python}")
    try:
        proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=opts.run_timeout)
    except FileNotFoundError:
        raise RunFailed(f"python {python!r} not found; pass --remote-python PATH") from None
    except subprocess.TimeoutExpired:
        raise RunFailed(f"the device runner did not finish within {opts.run_timeout:.0f} s") from None
    if proc.returncode != 0:
        msg = _runner_error(proc.stderr) or (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise RunFailed(f"the device runner failed: {msg}")
    result, preds = _read_outputs(tmp / "out")
    return DeviceRun(result, preds, {"host": None, "python": python, "runner": str(RUNNER)})


def check_remote_python(target: Any, python: str) -> str:
    """Fail with one clear line when the remote python or its numpy is missing; return versions."""
    proc = target.run(f"{shlex.quote(python)} -c {shlex.quote(_CHECK_PYTHON)}", check=False, what="checking python")
    if proc.returncode == 255:
        target.raise_for(proc, "checking python")
    out = proc.stdout.strip()
    if "PNCD_NO_NUMPY" in out:
        detail = out.split("PNCD_NO_NUMPY", 1)[1].strip()
        raise RunFailed(
            f"numpy is not importable by {python} on {target.host} ({detail}); install python3-numpy on the "
            "device or pass --remote-python of a Python that has numpy"
        )
    if proc.returncode in (126, 127) or "PNCD_OK" not in out:
        raise RunFailed(
            f"remote python {python!r} does not run on {target.host} "
            f"({(proc.stderr.strip().splitlines() or ['exit status %d' % proc.returncode])[-1]}); "
            "pass --remote-python PATH (e.g. /usr/bin/python3)"
        )
    return out.split("PNCD_OK", 1)[1].strip()


def _run_remote(
    onnx: Path, inputs: Path, precision: str, opts: JetsonOptions, tmp: Path, log: Callable[[str], None]
) -> DeviceRun:
    from pncd.targets.ssh import SshTarget

    target = SshTarget(opts.host or "", opts.ssh_options, opts.connect_timeout)  # called with a host only
    python = opts.remote_python or "python3"
    versions = check_remote_python(target, python)
    log(f"{opts.host}: python and numpy {versions}")
    where: dict[str, Any] = {"host": opts.host, "python": python}
    with target.temp_dir() as rdir:
        where["remote_workdir"] = rdir
        log(f"{opts.host}: copying the runner, {onnx.name} and the inputs to {rdir}")
        poly = polygraphy_zip(tmp)
        target.put([*DEVICE_FILES, *([poly] if poly else []), *onnx_files(onnx), inputs], rdir)
        cmd = "cd {} && {} jetson_runner.py {} --exit-on-stdin-eof".format(
            shlex.quote(rdir), shlex.quote(python), " ".join(shlex.quote(a) for a in runner_args(onnx.name, precision, opts))
        )
        log(f"{opts.host}: running ({opts.backend} backend); a first TensorRT build can take minutes")
        _ssh_hold_stdin(target, cmd, opts.run_timeout)
        out = tmp / "out"
        out.mkdir()
        target.get(f"{rdir}/out/result.json", out / "result.json")
        target.get(f"{rdir}/out/preds.npz", out / "preds.npz")
    where["remote_cleanup"] = "removed" if target.last_cleanup_ok else "failed"
    result, preds = _read_outputs(tmp / "out")
    return DeviceRun(result, preds, where)


def _ssh_hold_stdin(target: Any, command: str, timeout: float) -> None:
    """Run ``command`` with ssh's stdin held open; closing it (or our exit) stops the runner."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(target.ssh_argv(command), stdin=subprocess.PIPE, stdout=out, stderr=err, text=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RunFailed(f"the device runner on {target.host} did not finish within {timeout:.0f} s") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if proc.stdin:
                proc.stdin.close()
        err.seek(0)
        stderr = err.read()
        if proc.returncode != 0:
            msg = _runner_error(stderr)
            if msg:
                raise RunFailed(f"the device runner failed on {target.host}: {msg}")
            target.raise_for(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr), "the device runner")
