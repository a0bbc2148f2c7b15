#!/usr/bin/env python3
"""pncd's device-side runner: time an ONNX model and segment a batch of slices on a Jetson.

This file is copied to the device and run there by ``pncd bench --device jetson``; it must not
import pncd. It needs only the standard library, numpy and either TensorRT's Python bindings
(``python3-libnvinfer`` on JetPack) with Polygraphy (pure Python) or, as the documented
fallback, ONNX Runtime (``--backend onnxruntime``, or automatically when ``tensorrt`` or
``polygraphy`` is not importable). It runs on Python 3.8 (JetPack 5) and later.

Commands::

    python3 jetson_runner.py probe
        -> one JSON object on stdout: python, numpy, tensorrt, onnxruntime, GPU, nvpmodel, ...
    python3 jetson_runner.py run --onnx model.onnx --inputs inputs.npz --out-dir DIR [...]
        -> DIR/result.json (timings, environment, raw tegrastats lines) and DIR/preds.npz
           (uint8 label maps, key "preds").

TensorRT engines are built with Polygraphy's loaders and run with its ``TrtRunner``, and cached
on the device (see ``jetson_backends.py``); timing is the shared loop of ``timing.py``. The host
copies those files (and ``trt_build.py``) next to this one; ``polygraphy.zip`` in the working
directory, when the host sends it, is used if the device has no Polygraphy of its own.

Errors print one line ``PNCD_RUNNER_ERROR: <message>`` on stderr and exit with status 3 (the
environment lacks something) or 4 (the run failed); the host turns that line into its message.
With ``--exit-on-stdin-eof`` the runner stops (and stops tegrastats) as soon as its standard
input closes, so a dropped SSH connection leaves nothing running on the device.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING or __package__:  # imported as pncd.targets.jetson_runner (the host, the tests)
    from .jetson_backends import EXIT_ENV, EXIT_RUN, RunnerError, gpu_name, make_backend, version_of
    from .timing import timed_loop
else:  # on the device: copied next to this file
    if os.path.isfile("polygraphy.zip"):  # sent by the host; an installed Polygraphy comes first
        sys.path.append(os.path.abspath("polygraphy.zip"))
    from jetson_backends import EXIT_ENV, EXIT_RUN, RunnerError, gpu_name, make_backend, version_of
    from timing import timed_loop

RUNNER_VERSION = 2
ERROR_PREFIX = "PNCD_RUNNER_ERROR: "

_children: list[Any] = []  # processes to stop on any exit (tegrastats)


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip("\x00\n ")
    except OSError:
        return None


def cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Processor"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, flags=re.MULTILINE)
        if m:
            return m.group(1).strip()
    return platform.processor() or None


def clocks_state() -> dict:
    """Whether jetson_clocks looks active: it pins CPU and GPU minimum clocks to their maximum.

    Inferred from cpufreq/devfreq (readable without root); ``None`` when they are not readable.
    """
    cpu = []
    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq")):
        lo, hi = _read(d + "/scaling_min_freq"), _read(d + "/scaling_max_freq")
        if lo and hi:
            cpu.append(lo == hi)
    gpu = []
    for d in glob.glob("/sys/class/devfreq/*"):
        name = os.path.basename(os.path.realpath(d)) + " " + (_read(d + "/name") or "")
        if re.search(r"gpu|ga10b|gv11b|gp10b|gb10b", name):
            lo, hi = _read(d + "/min_freq"), _read(d + "/max_freq")
            if lo and hi:
                gpu.append(lo == hi)
    state = None
    if cpu:
        state = all(cpu) and (all(gpu) if gpu else True)
    return {"jetson_clocks": state, "cpu_min_eq_max": all(cpu) if cpu else None,
            "gpu_min_eq_max": all(gpu) if gpu else None,
            "how": "inferred: cpufreq/devfreq minimum clock equals maximum"}


def _run_text(cmd: list, timeout: float = 10.0) -> str | None:
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        return p.stdout.decode(errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None


def probe() -> dict:
    """What this machine offers; printed by ``probe`` and embedded in every result."""
    numpy_v, numpy_err = version_of("numpy")
    trt_v, trt_err = version_of("tensorrt")
    ort_v, ort_err = version_of("onnxruntime")
    providers = None
    if ort_v:
        try:
            import onnxruntime

            providers = onnxruntime.get_available_providers()
        except Exception:
            providers = None
    nvpmodel = shutil.which("nvpmodel")
    return {
        "runner_version": RUNNER_VERSION,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "numpy": numpy_v,
        "numpy_error": numpy_err,
        "tensorrt": trt_v,
        "tensorrt_error": trt_err,
        "polygraphy": version_of("polygraphy")[0],
        "onnxruntime": ort_v,
        "onnxruntime_error": ort_err,
        "onnxruntime_providers": providers,
        "hostname": platform.node(),
        "machine": platform.machine(),
        "system": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device_model": _read("/proc/device-tree/model"),
        "l4t_release": (_read("/etc/nv_tegra_release") or "").splitlines()[0] if _read("/etc/nv_tegra_release") else None,
        "gpu_name": gpu_name() if trt_v else None,
        "nvpmodel_raw": _run_text([nvpmodel, "-q"]) if nvpmodel else None,
        "clocks": clocks_state(),
        "tegrastats": shutil.which("tegrastats"),
    }


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


class Tegrastats:
    """tegrastats in the background, its lines collected; always stopped by ``stop()``."""

    def __init__(self, path: str, interval_ms: int) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen([path, "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        _children.append(self.proc)
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for raw in self.proc.stdout or ():
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def wait_first(self, timeout: float) -> None:
        """Wait for the first sample so tegrastats' own start-up is not inside the timed loop."""
        deadline = time.monotonic() + timeout
        while not self.lines and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        self.mark = len(self.lines)

    def stop(self) -> list:
        """Stop sampling; the lines printed since ``wait_first`` (the timed loop's samples)."""
        _stop(self.proc)
        self.thread.join(timeout=2)
        return list(self.lines[getattr(self, "mark", 0):])


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def segment(backend, images, batch: int):
    """Label maps (uint8) for all images: argmax over the class logits (data/spec.py: two or more)."""
    import numpy as np

    preds = [np.asarray(backend.infer(images[i : i + batch])).argmax(axis=1).astype(np.uint8)
             for i in range(0, len(images), batch)]
    return np.concatenate(preds, axis=0)


def _watch_stdin() -> None:
    """Exit when stdin closes (the host's SSH session ended), stopping child processes first."""

    def watch() -> None:
        try:  # os.read on the raw descriptor: no buffered-reader lock to trip interpreter shutdown
            while os.read(0, 1024):
                pass
        except OSError:
            pass
        for p in _children:
            try:
                _stop(p)
            except Exception:
                pass
        os._exit(EXIT_RUN)

    threading.Thread(target=watch, daemon=True).start()


def run(args) -> dict:
    try:
        import numpy as np
    except ImportError as e:
        raise RunnerError(f"numpy is not importable by {sys.executable} ({e}); install python3-numpy or "
                          "pass --remote-python of a Python that has numpy", EXIT_ENV) from None
    env = probe()
    with np.load(args.inputs) as z:
        images = np.ascontiguousarray(z["images"], dtype=np.float32)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    backend, reason = make_backend(args, max(args.batch, args.accuracy_batch))
    result = {"runner_version": RUNNER_VERSION, "backend": backend.name, "backend_reason": reason,
              "settings": backend.settings, "env": env, "activation_s": backend.activation_s,
              "engine_build_s": getattr(backend, "build_s", None)}
    tegra = None
    try:
        x1 = images[:1]
        t0 = time.perf_counter()
        backend.infer(x1)
        result["first_inference_ms"] = (time.perf_counter() - t0) * 1e3
        ts_path = shutil.which("tegrastats") if args.tegrastats == "auto" else (
            None if args.tegrastats == "off" else args.tegrastats)
        min_duration = 0.0
        if ts_path:
            tegra = Tegrastats(ts_path, args.tegrastats_interval)
            tegra.wait_first(timeout=2.0 + 3 * args.tegrastats_interval / 1000.0)
            min_duration = 5 * args.tegrastats_interval / 1000.0
        result["latency_b1"] = timed_loop(backend.infer, x1, args.warmup, args.iters, args.duration, min_duration)
        result["tegrastats"] = {"path": ts_path, "interval_ms": args.tegrastats_interval,
                                "lines": tegra.stop() if tegra else []}
        tegra = None
        # Throughput at a larger batch, when the model takes one.
        b = args.batch
        if b > 1 and (backend.max_batch is None or backend.max_batch >= b):
            xb = np.concatenate([images] * (-(-b // len(images))), axis=0)[:b]
            try:
                result["latency_batch"] = timed_loop(backend.infer, xb, min(args.warmup, 3), max(5, args.iters // 4), 0)
            except Exception as e:  # a static-batch graph rejects it: record why, keep going
                result["latency_batch"] = {"batch": b, "error": f"{type(e).__name__}: {e}".splitlines()[0]}
        else:
            result["latency_batch"] = {"batch": b, "error": f"the model takes batch {backend.max_batch} only"}
        acc_batch = args.accuracy_batch if (backend.max_batch is None or backend.max_batch >= args.accuracy_batch) else 1
        t0 = time.perf_counter()
        preds = segment(backend, images, acc_batch)
        result["accuracy_pass"] = {"n_images": int(len(images)), "batch": acc_batch, "seconds": time.perf_counter() - t0}
        result["memory"] = {"ru_maxrss_before_kb": rss0, "ru_maxrss_after_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                            "what": "growth of this process's peak resident set size (ru_maxrss) over activation and runs"}
    finally:
        if tegra is not None:
            tegra.stop()
        backend.close()
    os.makedirs(args.out_dir, exist_ok=True)
    np.savez_compressed(os.path.join(args.out_dir, "preds.npz"), preds=preds)
    with open(os.path.join(args.out_dir, "result.json"), "w") as f:
        json.dump(result, f)
    return result


def parser() -> argparse.ArgumentParser:
    """The runner's arguments. Every value of ``run`` is required and has no default here: the
    host passes each one (:func:`pncd.targets.jetson.runner_args`, from the bench's options), so
    the values have one definition, on the host."""
    ap = argparse.ArgumentParser(description="pncd device-side runner (see the module docstring)")
    sub = ap.add_subparsers(dest="command")
    sub.add_parser("probe", help="print what this machine offers as JSON")
    r = sub.add_parser("run", help="time the model and segment the inputs")
    for flag, kw in (
        ("--onnx", {}),
        ("--inputs", {"help": "npz with 'images' float32 (N, C, H, W)"}),
        ("--out-dir", {}),
        ("--backend", {"choices": ("auto", "tensorrt", "onnxruntime")}),
        ("--precision", {"choices": ("fp32", "fp16", "int8")}),
        ("--cache-dir", {"help": "TensorRT engine cache directory"}),
        ("--warmup", {"type": int}),
        ("--iters", {"type": int}),
        ("--duration", {"type": float, "help": "seconds; overrides --iters when > 0"}),
        ("--batch", {"type": int, "help": "batch for the throughput measurement"}),
        ("--accuracy-batch", {"type": int}),
        ("--threads", {"type": int, "help": "ONNX Runtime intra-op threads (0: its default)"}),
        ("--tegrastats", {"help": "auto (on PATH), off, or a path"}),
        ("--tegrastats-interval", {"type": int, "help": "milliseconds"}),
    ):
        r.add_argument(flag, required=True, **kw)
    r.add_argument("--exit-on-stdin-eof", action="store_true")
    return ap


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    try:
        if args.command == "probe":
            print(json.dumps(probe()))
            return 0
        if args.command == "run":
            if args.exit_on_stdin_eof:
                _watch_stdin()
            run(args)
            return 0
        ap.print_help()
        return 2
    except RunnerError as e:
        print(ERROR_PREFIX + str(e), file=sys.stderr)
        return e.code
    except Exception as e:  # anything else still ends in one line the host can show
        print(ERROR_PREFIX + f"{type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
        return EXIT_RUN
    finally:
        for p in _children:
            try:
                _stop(p)
            except Exception:
                pass


if __name__ == "__main__":
    sys.exit(main())
