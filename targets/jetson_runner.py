#!/usr/bin/env python3
"""pncd's device-side runner: time an ONNX model and segment a batch of slices on a Jetson.

This file is copied to the device and run there by ``pncd bench --device jetson``; it must not
import pncd. It needs only the standard library, numpy and either TensorRT's Python bindings
(``python3-libnvinfer`` on JetPack; CUDA memory through ``libcudart`` with ctypes) or, as the
documented fallback, ONNX Runtime (``--backend onnxruntime``, or automatically when ``tensorrt``
is not importable). It runs on Python 3.8 (JetPack 5) and later.

Commands::

    python3 jetson_runner.py probe
        -> one JSON object on stdout: python, numpy, tensorrt, onnxruntime, GPU, nvpmodel, ...
    python3 jetson_runner.py run --onnx model.onnx --inputs inputs.npz --out-dir DIR [...]
        -> DIR/result.json (timings, environment, raw tegrastats lines) and DIR/preds.npz
           (uint8 label maps, key "preds").

TensorRT engines are cached in ``--cache-dir`` (default ``~/.cache/pncd-engines``) under a name
made of the ONNX file's SHA-256, the TensorRT version, the GPU name, the precision and the
largest batch: an engine only runs on the TensorRT version and GPU that built it.

Errors print one line ``PNCD_RUNNER_ERROR: <message>`` on stderr and exit with status 3 (the
environment lacks something) or 4 (the run failed); the host turns that line into its message.
With ``--exit-on-stdin-eof`` the runner stops (and stops tegrastats) as soon as its standard
input closes, so a dropped SSH connection leaves nothing running on the device.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import glob
import hashlib
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

RUNNER_VERSION = 1
ERROR_PREFIX = "PNCD_RUNNER_ERROR: "
EXIT_ENV = 3
EXIT_RUN = 4

_children = []  # processes to stop on any exit (tegrastats)


class RunnerError(Exception):
    def __init__(self, message: str, code: int = EXIT_RUN) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip("\x00\n ")
    except OSError:
        return None


def _version_of(module: str) -> tuple[str | None, str | None]:
    try:
        mod = __import__(module)
        return str(getattr(mod, "__version__", "unknown")), None
    except Exception as e:  # ImportError, or a broken install raising anything else
        return None, f"{type(e).__name__}: {e}".splitlines()[0]


def gpu_name() -> str | None:
    """The first CUDA device's name through the driver API (stable C signatures), or None."""
    for lib in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        dev = ctypes.c_int()
        buf = ctypes.create_string_buffer(256)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(dev), 0) != 0:
            return None
        if cuda.cuDeviceGetName(buf, 256, dev) != 0:
            return None
        return buf.value.decode(errors="replace")
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
    numpy_v, numpy_err = _version_of("numpy")
    trt_v, trt_err = _version_of("tensorrt")
    ort_v, ort_err = _version_of("onnxruntime")
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
# Backends: infer(x) -> logits, with end-to-end time and (where separable) compute time
# ---------------------------------------------------------------------------------------------


class OrtBackend:
    """ONNX Runtime: CUDA provider when the installed build has one, else CPU."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str, threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        avail = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
        t0 = time.perf_counter()
        self.session = ort.InferenceSession(onnx_path, opts, providers=providers)
        self.activation_s = time.perf_counter() - t0
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        batch_dim = inp.shape[0]
        self.max_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self.settings = {"providers": self.session.get_providers(), "intra_op_num_threads": threads or "default"}
        self.last_compute_ms = None

    def infer(self, x):
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def close(self) -> None:
        self.session = None


class CudaRt:
    """The few CUDA runtime calls TensorRT needs, through ctypes (no pycuda/cuda-python needed)."""

    H2D, D2H = 1, 2

    def __init__(self) -> None:
        names = [ctypes.util.find_library("cudart"), "libcudart.so", "libcudart.so.12", "libcudart.so.11.0",
                 "/usr/local/cuda/lib64/libcudart.so"]
        self.lib = None
        for n in names:
            if not n:
                continue
            try:
                self.lib = ctypes.CDLL(n)
                break
            except OSError:
                continue
        if self.lib is None:
            raise RunnerError("libcudart (the CUDA runtime) was not found; install JetPack's CUDA runtime", EXIT_ENV)
        self.lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        self.lib.cudaFree.argtypes = [ctypes.c_void_p]
        self.lib.cudaMemcpyAsync.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
        self.lib.cudaStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        self.lib.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
        self.lib.cudaStreamDestroy.argtypes = [ctypes.c_void_p]
        self.lib.cudaEventCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        self.lib.cudaEventRecord.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.lib.cudaEventSynchronize.argtypes = [ctypes.c_void_p]
        self.lib.cudaEventElapsedTime.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_void_p]
        self.lib.cudaEventDestroy.argtypes = [ctypes.c_void_p]

    def check(self, status: int, what: str) -> None:
        if status != 0:
            raise RunnerError(f"CUDA call {what} failed with error {status}")

    def malloc(self, nbytes: int) -> int:
        p = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(p), max(int(nbytes), 1)), "cudaMalloc")
        return int(p.value)

    def free(self, ptr: int) -> None:
        self.lib.cudaFree(ctypes.c_void_p(ptr))

    def stream(self) -> int:
        s = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return int(s.value or 0)

    def memcpy_async(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        self.check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src), nbytes, kind,
                                            ctypes.c_void_p(stream)), "cudaMemcpyAsync")

    def sync(self, stream: int) -> None:
        self.check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def event(self) -> int:
        e = ctypes.c_void_p()
        self.check(self.lib.cudaEventCreate(ctypes.byref(e)), "cudaEventCreate")
        return int(e.value)

    def record(self, event: int, stream: int) -> None:
        self.check(self.lib.cudaEventRecord(ctypes.c_void_p(event), ctypes.c_void_p(stream)), "cudaEventRecord")

    def elapsed_ms(self, start: int, end: int) -> float:
        ms = ctypes.c_float()
        self.check(self.lib.cudaEventSynchronize(ctypes.c_void_p(end)), "cudaEventSynchronize")
        self.check(self.lib.cudaEventElapsedTime(ctypes.byref(ms), ctypes.c_void_p(start), ctypes.c_void_p(end)),
                   "cudaEventElapsedTime")
        return float(ms.value)

    def destroy(self, stream: int, events: list) -> None:
        for e in events:
            self.lib.cudaEventDestroy(ctypes.c_void_p(e))
        if stream:
            self.lib.cudaStreamDestroy(ctypes.c_void_p(stream))


def _version_tuple(v: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def file_digest(paths: list) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def engine_cache_name(onnx_sha: str, trt_version: str, gpu: str | None, precision: str, max_batch: int) -> str:
    """File name of a cached engine: everything an engine depends on, readable at a glance."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu or "unknown-gpu").strip("-").lower()
    return f"{onnx_sha[:20]}-trt{trt_version}-{slug}-{precision}-b{max_batch}.engine"


class TrtBackend:
    """TensorRT: build (or load the cached) engine from the ONNX, run it with CUDA events.

    TensorRT 10.12 and later build strongly typed networks (precision comes from the ONNX: FP16
    weights, QDQ nodes); older 10.x (JetPack 6: 10.3) are weakly typed, so FP16/INT8 are asked
    for with builder flags, as REFERENCE.md section 5 describes.
    """

    name = "tensorrt"

    def __init__(self, onnx_path: str, precision: str, cache_dir: str, max_batch: int, trt=None, cuda=None) -> None:
        if trt is None:
            import tensorrt as trt
        self.trt = trt
        self.cuda = cuda or CudaRt()
        self.logger = trt.Logger(trt.Logger.WARNING)
        files = [onnx_path] + ([onnx_path + ".data"] if os.path.exists(onnx_path + ".data") else [])
        self.gpu = gpu_name()
        cache_dir = os.path.expanduser(cache_dir)
        os.makedirs(cache_dir, exist_ok=True)
        self.max_batch = max_batch
        name = engine_cache_name(file_digest(files), trt.__version__, self.gpu, precision, max_batch)
        self.engine_path = os.path.join(cache_dir, name)
        self.from_cache = os.path.exists(self.engine_path)
        self.build_s = None
        t0 = time.perf_counter()
        data = self._load_or_build(onnx_path, precision)
        runtime = trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None and self.from_cache:  # stale or damaged cache entry: rebuild once
            os.remove(self.engine_path)
            self.from_cache = False
            self.engine = runtime.deserialize_cuda_engine(self._load_or_build(onnx_path, precision))
        if self.engine is None:
            raise RunnerError(f"TensorRT could not deserialize the engine {self.engine_path}")
        self.context = self.engine.create_execution_context()
        self.activation_s = time.perf_counter() - t0
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        self.input_name, self.output_name = inputs[0], outputs[0]
        # The engine knows its batch range (also when it came from the cache): static or profile max.
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        if shape and shape[0] != -1:
            self.max_batch = int(shape[0])
        else:
            try:
                self.max_batch = int(self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
            except Exception:
                pass
        self.stream = self.cuda.stream()
        self.events = [self.cuda.event(), self.cuda.event()]
        self.buffers = {}
        self.settings = {"tensorrt": trt.__version__, "gpu": self.gpu, "precision": precision,
                         "engine_cache": self.engine_path, "engine_from_cache": self.from_cache,
                         "strongly_typed": self.strongly_typed}
        self.last_compute_ms = None

    @property
    def strongly_typed(self) -> bool:
        flag = getattr(self.trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        return flag is not None and _version_tuple(self.trt.__version__) >= (10, 12)

    def _load_or_build(self, onnx_path: str, precision: str) -> bytes:
        if self.from_cache:
            with open(self.engine_path, "rb") as f:
                return f.read()
        trt = self.trt
        t0 = time.perf_counter()
        builder = trt.Builder(self.logger)
        flags = 0
        if self.strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(onnx_path):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RunnerError(f"TensorRT could not parse {os.path.basename(onnx_path)}: {errors}")
        config = builder.create_builder_config()
        if not self.strongly_typed and precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
            if precision == "int8":
                config.set_flag(trt.BuilderFlag.INT8)  # the ONNX carries QDQ scales; no calibrator
        inp = network.get_input(0)
        shape = tuple(inp.shape)
        if shape[0] == -1:
            profile = builder.create_optimization_profile()
            rest = shape[1:]
            profile.set_shape(inp.name, (1,) + rest, (1,) + rest, (self.max_batch,) + rest)
            config.add_optimization_profile(profile)
        else:
            self.max_batch = shape[0]
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RunnerError(f"TensorRT failed to build an engine from {os.path.basename(onnx_path)} ({precision})")
        data = bytes(serialized)
        tmp = self.engine_path + ".tmp%d" % os.getpid()
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.engine_path)  # a half-written engine never enters the cache
        self.build_s = time.perf_counter() - t0
        return data

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.cuda.free(ptr)
            ptr, size = self.cuda.malloc(nbytes), nbytes
            self.buffers[name] = (ptr, size)
        return ptr

    def infer(self, x):
        import numpy as np

        trt, cuda, ctx = self.trt, self.cuda, self.context
        x = np.ascontiguousarray(x, dtype=trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        if ctx.set_input_shape(self.input_name, tuple(x.shape)) is False:
            raise RunnerError(f"the engine does not take input shape {tuple(x.shape)} (batch 1..{self.max_batch})")
        out_shape = tuple(ctx.get_tensor_shape(self.output_name))
        out = np.empty(out_shape, dtype=trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        d_in = self._buffer(self.input_name, x.nbytes)
        d_out = self._buffer(self.output_name, out.nbytes)
        ctx.set_tensor_address(self.input_name, d_in)
        ctx.set_tensor_address(self.output_name, d_out)
        cuda.memcpy_async(d_in, x.ctypes.data, x.nbytes, CudaRt.H2D, self.stream)
        cuda.record(self.events[0], self.stream)
        if not ctx.execute_async_v3(self.stream):
            raise RunnerError("TensorRT execute_async_v3 failed")
        cuda.record(self.events[1], self.stream)
        cuda.memcpy_async(out.ctypes.data, d_out, out.nbytes, CudaRt.D2H, self.stream)
        cuda.sync(self.stream)
        self.last_compute_ms = cuda.elapsed_ms(self.events[0], self.events[1])
        return out

    def close(self) -> None:
        for ptr, _ in self.buffers.values():
            self.cuda.free(ptr)
        self.buffers = {}
        self.cuda.destroy(self.stream, self.events)
        self.context = None
        self.engine = None


def make_backend(args, max_batch: int):
    """Pick the backend: ``auto`` prefers TensorRT and falls back to ONNX Runtime, saying why."""
    reason = "asked for with --backend " + args.backend
    if args.backend in ("auto", "tensorrt"):
        _, err = _version_of("tensorrt")
        if err is None:
            return TrtBackend(args.onnx, args.precision, args.cache_dir, max_batch), (
                "tensorrt importable" if args.backend == "auto" else reason)
        if args.backend == "tensorrt":
            raise RunnerError(f"tensorrt is not importable by {sys.executable} ({err}); install JetPack's "
                              "python3-libnvinfer or use --remote-backend onnxruntime", EXIT_ENV)
        reason = f"fallback: tensorrt not importable ({err})"
    _, err = _version_of("onnxruntime")
    if err is not None:
        raise RunnerError(f"neither tensorrt nor onnxruntime is importable by {sys.executable} ({err}); "
                          "install python3-libnvinfer (JetPack) or onnxruntime", EXIT_ENV)
    return OrtBackend(args.onnx, args.threads), reason


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


class Tegrastats:
    """tegrastats in the background, its lines collected; always stopped by ``stop()``."""

    def __init__(self, path: str, interval_ms: int) -> None:
        self.lines = []
        self.proc = subprocess.Popen([path, "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        _children.append(self.proc)
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for raw in self.proc.stdout:
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


def timed_loop(backend, x, warmup: int, iters: int, duration: float, min_duration: float = 0.0) -> dict:
    """Warm up, then time ``iters`` calls (or as many as fit in ``duration`` seconds, at least one).

    ``min_duration`` keeps the loop going at least that long (so tegrastats, which samples every
    interval, sees several samples of the loop even when the model is fast).
    """
    for _ in range(warmup):
        backend.infer(x)
    e2e, compute = [], []
    t_start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        backend.infer(x)
        e2e.append((time.perf_counter() - t0) * 1e3)
        if backend.last_compute_ms is not None:
            compute.append(backend.last_compute_ms)
        elapsed = time.perf_counter() - t_start
        if elapsed < min_duration:
            continue
        if (duration and elapsed >= duration) or (not duration and len(e2e) >= iters):
            break
    return {"end_to_end_ms": e2e, "compute_ms": compute or None, "duration_s": time.perf_counter() - t_start,
            "batch": int(x.shape[0])}


def segment(backend, images, batch: int):
    """Label maps (uint8) for all images: argmax over classes (a single logit: > 0)."""
    import numpy as np

    preds = []
    for i in range(0, len(images), batch):
        logits = np.asarray(backend.infer(images[i : i + batch]))
        if logits.shape[1] == 1:
            preds.append((logits[:, 0] > 0).astype(np.uint8))
        else:
            preds.append(logits.argmax(axis=1).astype(np.uint8))
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
        result["latency_b1"] = timed_loop(backend, x1, args.warmup, args.iters, args.duration, min_duration)
        result["tegrastats"] = {"path": ts_path, "interval_ms": args.tegrastats_interval,
                                "lines": tegra.stop() if tegra else []}
        tegra = None
        # Throughput at a larger batch, when the model takes one.
        b = args.batch
        if b > 1 and (backend.max_batch is None or backend.max_batch >= b):
            xb = np.concatenate([images] * (-(-b // len(images))), axis=0)[:b]
            try:
                result["latency_batch"] = timed_loop(backend, xb, min(args.warmup, 3), max(5, args.iters // 4), 0)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="pncd device-side runner (see the module docstring)")
    sub = ap.add_subparsers(dest="command")
    sub.add_parser("probe", help="print what this machine offers as JSON")
    r = sub.add_parser("run", help="time the model and segment the inputs")
    r.add_argument("--onnx", required=True)
    r.add_argument("--inputs", required=True, help="npz with 'images' float32 (N, C, H, W)")
    r.add_argument("--out-dir", required=True)
    r.add_argument("--backend", choices=("auto", "tensorrt", "onnxruntime"), default="auto")
    r.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    r.add_argument("--cache-dir", default="~/.cache/pncd-engines")
    r.add_argument("--warmup", type=int, default=10)
    r.add_argument("--iters", type=int, default=100)
    r.add_argument("--duration", type=float, default=0.0, help="seconds; overrides --iters when > 0")
    r.add_argument("--batch", type=int, default=8, help="batch for the throughput measurement")
    r.add_argument("--accuracy-batch", type=int, default=8)
    r.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: default)")
    r.add_argument("--tegrastats", default="auto", help="auto (on PATH), off, or a path")
    r.add_argument("--tegrastats-interval", type=int, default=100, help="milliseconds")
    r.add_argument("--exit-on-stdin-eof", action="store_true")
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
