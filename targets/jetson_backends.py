"""The device runner's backends: TensorRT through Polygraphy, or ONNX Runtime.

Copied to the device with ``jetson_runner.py`` (and ``trt_build.py``, ``timing.py``); it imports
nothing from pncd. Each backend has ``infer(x) -> logits`` (numpy in and out), ``max_batch``
(None: any), ``settings``, ``activation_s`` and ``close()``.

TensorRT engines are built by :func:`trt_build.build_engine_bytes` (Polygraphy's
``NetworkFromOnnxPath`` / ``CreateConfig`` / ``EngineBytesFromNetwork``, the same builder the
export uses) and run by Polygraphy's ``TrtRunner`` (which manages the CUDA buffers and stream
through ``polygraphy.cuda``). They are cached in ``--cache-dir`` under a name made of the ONNX
file's SHA-256, the TensorRT version, the GPU name, the precision and the largest batch: an
engine only runs on the TensorRT version and GPU that built it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING or __package__:  # imported as pncd.targets.jetson_backends (the host, the tests)
    from .trt_build import build_engine_bytes, trt_build_plan
else:  # on the device: copied next to jetson_runner.py
    from trt_build import build_engine_bytes, trt_build_plan

EXIT_ENV = 3
EXIT_RUN = 4


class RunnerError(Exception):
    def __init__(self, message: str, code: int = EXIT_RUN) -> None:
        super().__init__(message)
        self.code = code


def version_of(module: str) -> tuple:
    """(version, None) if ``module`` imports, else (None, the reason in one line)."""
    try:
        mod = __import__(module, fromlist=["_"])
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

    def infer(self, x):
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def close(self) -> None:
        self.session = None


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
    """TensorRT: build (or load the cached) engine from the ONNX, run it with Polygraphy's TrtRunner.

    ``trt`` / ``poly`` default to the ``tensorrt`` module and ``polygraphy.backend.trt`` (tests
    pass stand-ins: neither can exist on a machine without an NVIDIA GPU).
    """

    name = "tensorrt"

    def __init__(self, onnx_path: str, precision: str, cache_dir: str, max_batch: int, trt=None, poly=None) -> None:
        import importlib

        self.trt = trt or importlib.import_module("tensorrt")
        self.poly = poly = poly or importlib.import_module("polygraphy.backend.trt")
        trt = self.trt
        files = [onnx_path] + ([onnx_path + ".data"] if os.path.exists(onnx_path + ".data") else [])
        self.gpu = gpu_name()
        cache_dir = os.path.expanduser(cache_dir)
        os.makedirs(cache_dir, exist_ok=True)
        self.max_batch = max_batch
        name = engine_cache_name(file_digest(files), trt.__version__, self.gpu, precision, max_batch)
        self.engine_path = os.path.join(cache_dir, name)
        self.from_cache = os.path.exists(self.engine_path)
        self.build_s: float | None = None
        t0 = time.perf_counter()
        engine = self._engine(onnx_path, precision)
        self.runner = poly.TrtRunner(engine)
        self.runner.activate()
        self.activation_s = time.perf_counter() - t0
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name, self.output_name = inputs[0], [n for n in names if n not in inputs][0]
        # The engine knows its batch range (also when it came from the cache): static or profile max.
        shape = tuple(engine.get_tensor_shape(self.input_name))
        if shape and shape[0] != -1:
            self.max_batch = int(shape[0])
        else:
            self.max_batch = int(engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
        self.settings = {"tensorrt": trt.__version__, "polygraphy": getattr(sys.modules.get("polygraphy"),
                                                                           "__version__", None),
                         "gpu": self.gpu, "precision": precision, "engine_cache": self.engine_path,
                         "engine_from_cache": self.from_cache, "strongly_typed": self.strongly_typed}

    @property
    def strongly_typed(self) -> bool:
        return bool(trt_build_plan(self.trt.__version__, "fp32")["strongly_typed"])

    def _engine(self, onnx_path: str, precision: str):
        """The cached engine, or a new one (a stale or damaged cache entry is rebuilt once)."""
        if self.from_cache:
            with open(self.engine_path, "rb") as f:
                data = f.read()
            try:
                return self.poly.EngineFromBytes(data)()
            except Exception:
                os.remove(self.engine_path)
                self.from_cache = False
        t0 = time.perf_counter()
        try:
            data, self.max_batch = build_engine_bytes(onnx_path, precision, self.trt, self.poly, self.max_batch)
        except RunnerError:
            raise
        except Exception as e:  # PolygraphyException; its log (stderr) says why
            raise RunnerError(f"TensorRT could not build an engine from {os.path.basename(onnx_path)} "
                              f"({precision}): {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
        tmp = self.engine_path + ".tmp%d" % os.getpid()
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.engine_path)  # a half-written engine never enters the cache
        self.build_s = time.perf_counter() - t0
        try:
            return self.poly.EngineFromBytes(data)()
        except Exception as e:
            raise RunnerError(f"TensorRT could not deserialize the engine {self.engine_path} ({e})")

    def infer(self, x):
        import numpy as np

        out = self.runner.infer({self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return np.array(out[self.output_name], copy=True)  # TrtRunner reuses its output buffers

    def close(self) -> None:
        self.runner.deactivate()


def make_backend(args, max_batch: int):
    """Pick the backend: ``auto`` prefers TensorRT and falls back to ONNX Runtime, saying why."""
    reason = "asked for with --backend " + args.backend
    if args.backend in ("auto", "tensorrt"):
        what, err = "tensorrt", None
        for what in ("tensorrt", "polygraphy"):
            err = version_of("polygraphy.backend.trt" if what == "polygraphy" else what)[1]
            if err:
                break
        if err is None:
            return TrtBackend(args.onnx, args.precision, args.cache_dir, max_batch), (
                "tensorrt importable" if args.backend == "auto" else reason)
        hint = "install JetPack's python3-libnvinfer" if what == "tensorrt" else "pip install polygraphy"
        if args.backend == "tensorrt":
            raise RunnerError(f"{what} is not importable by {sys.executable} ({err}); {hint} on the device "
                              "or use --remote-backend onnxruntime", EXIT_ENV)
        reason = f"fallback: {what} not importable ({err})"
    _, err = version_of("onnxruntime")
    if err is not None:
        raise RunnerError(f"neither tensorrt nor onnxruntime is importable by {sys.executable} ({err}); "
                          "install python3-libnvinfer (JetPack) or onnxruntime", EXIT_ENV)
    return OrtBackend(args.onnx, args.threads), reason
