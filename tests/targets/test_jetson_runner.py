"""The device-side runner on this machine: locally (no SSH), and its TensorRT path on a mock.

TensorRT cannot be installed here (REFERENCE.md section 5), so ``test_tensorrt_path_*`` drive
the runner's ``TrtBackend`` with a stand-in ``tensorrt`` module and a stand-in CUDA runtime:
the "engine" executes the ONNX with ONNX Runtime, "device memory" is host memory. What these
tests check is the runner's own logic around TensorRT — engine cache naming and reuse, the
dynamic-batch optimisation profile, precision flags for weakly and strongly typed TensorRT,
buffer handling and output shapes — not TensorRT itself.
"""

from __future__ import annotations

import ctypes
import time
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pncd.errors import PncdError
from pncd.targets import jetson_runner as jr
from pncd.targets.jetson import JetsonOptions, run_on_device


def _ort_labels(onnx: Path, images: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {"input": images[i : i + 1]})[0] for i in range(len(images))]).argmax(1).astype(np.uint8)


def test_local_runner_without_host(tiny_onnx, tiny_images):
    opts = JetsonOptions(host=None, warmup=1, iters=6, batch=3, accuracy_batch=2, tegrastats="off")
    run = run_on_device(tiny_onnx, tiny_images, "fp32", opts)
    assert run.where["host"] is None
    assert run.result["backend"] == "onnxruntime"
    assert len(run.result["latency_b1"]["end_to_end_ms"]) == 6
    assert run.result["accuracy_pass"]["batch"] == 2
    assert run.result["env"]["numpy"] == np.__version__
    np.testing.assert_array_equal(run.preds, _ort_labels(tiny_onnx, tiny_images))


def test_local_runner_static_batch_records_why(tmp_path, tiny_images):
    from tests.bench.conftest import make_onnx  # by package path: several conftest.py exist

    static = make_onnx(tmp_path / "static.onnx", dynamic=False)
    opts = JetsonOptions(host=None, warmup=0, iters=3, batch=4, accuracy_batch=4, tegrastats="off")
    run = run_on_device(static, tiny_images, "fp32", opts)
    assert "batch 1 only" in run.result["latency_batch"]["error"]
    assert run.result["accuracy_pass"]["batch"] == 1
    np.testing.assert_array_equal(run.preds, _ort_labels(static, tiny_images))


def test_local_runner_error_is_one_line(tmp_path, tiny_images):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(PncdError, match="the device runner failed: ") as e:
        run_on_device(bad, tiny_images, "fp32", JetsonOptions(tegrastats="off"))
    assert "\n" not in str(e.value)


def test_engine_cache_name_carries_what_an_engine_depends_on():
    a = jr.engine_cache_name("ab" * 32, "10.3.0", "Orin (nvgpu)", "fp16", 8)
    assert a == f"{'ab' * 10}-trt10.3.0-orin-nvgpu-fp16-b8.engine"
    assert a != jr.engine_cache_name("ab" * 32, "10.16.1", "Orin (nvgpu)", "fp16", 8)
    assert a != jr.engine_cache_name("ab" * 32, "10.3.0", "Orin (nvgpu)", "int8", 8)
    assert a != jr.engine_cache_name("cd" * 32, "10.3.0", "Orin (nvgpu)", "fp16", 8)


# ------------------------------------------------------------------ mock TensorRT (see docstring)


class FakeCuda:
    """Host memory standing in for device memory; copies with memmove."""

    H2D, D2H = 1, 2

    def __init__(self):
        self.mem, self.freed = {}, []

    def malloc(self, n):
        buf = np.empty(n, np.uint8)
        self.mem[buf.ctypes.data] = buf
        return buf.ctypes.data

    def free(self, ptr):
        self.freed.append(ptr)
        self.mem.pop(ptr)

    def stream(self):
        return 1

    def event(self):
        return time.perf_counter_ns()

    def record(self, event, stream):
        pass

    def elapsed_ms(self, a, b):
        return 0.5

    def memcpy_async(self, dst, src, n, kind, stream):
        ctypes.memmove(dst, src, n)

    def sync(self, stream):
        pass

    def destroy(self, stream, events):
        pass


def fake_tensorrt(version: str):
    log = {"builds": 0, "flags": [], "network_flags": [], "profiles": []}

    class Enum:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags):
            log["network_flags"].append(flags)
            self.onnx = None

        def get_input(self, i):
            s = ort.InferenceSession(self.onnx, providers=["CPUExecutionProvider"]).get_inputs()[0]
            return Tensor(s.name, tuple(-1 if not isinstance(d, int) else d for d in s.shape))

    class Parser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            self.network.onnx = Path(path).read_bytes()
            return True

    class Config:
        def set_flag(self, f):
            log["flags"].append(f)

        def add_optimization_profile(self, p):
            log["profiles"].append(p.shapes)

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            log["builds"] += 1
            return b"ENGINE" + network.onnx

    class Context:
        def __init__(self, session):
            self.s, self.shape, self.addr = session, None, {}

        def set_input_shape(self, name, shape):
            self.shape = shape
            return True

        def get_tensor_shape(self, name):
            return (self.shape[0], 2, *self.shape[2:])

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            n = int(np.prod(self.shape))
            x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addr["input"])).reshape(self.shape)
            y = np.ascontiguousarray(self.s.run(None, {"input": x.copy()})[0], dtype=np.float32)
            ctypes.memmove(self.addr["logits"], y.ctypes.data, y.nbytes)
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self, blob):
            self.s = ort.InferenceSession(blob[len(b"ENGINE"):], providers=["CPUExecutionProvider"])

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return "IN" if name == "input" else "OUT"

        def get_tensor_dtype(self, name):
            return "float"

        def get_tensor_shape(self, name):
            shape = self.s.get_inputs()[0].shape
            return tuple(-1 if not isinstance(d, int) else d for d in shape)

        def get_tensor_profile_shape(self, name, profile):
            return [(1, *self.get_tensor_shape(name)[1:]), (1, *self.get_tensor_shape(name)[1:]),
                    (log["profiles"][-1][name][2][0], *self.get_tensor_shape(name)[1:])]

        def create_execution_context(self):
            return Context(self.s)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return Engine(blob) if bytes(blob).startswith(b"ENGINE") else None

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    trt = types.SimpleNamespace(
        __version__=version, Logger=Logger, Builder=Builder, OnnxParser=Parser, Runtime=Runtime,
        NetworkDefinitionCreationFlag=Enum(STRONGLY_TYPED=3), BuilderFlag=Enum(FP16="FP16", INT8="INT8"),
        TensorIOMode=Enum(INPUT="IN", OUTPUT="OUT"), nptype=lambda dt: np.float32,
    )
    return trt, log


def test_tensorrt_path_builds_once_then_uses_cache(tmp_path, tiny_onnx, tiny_images):
    """Mocked TensorRT (none here): the engine is built once, then taken from the cache."""
    trt, log = fake_tensorrt("10.3.0")
    cuda = FakeCuda()
    b = jr.TrtBackend(str(tiny_onnx), "fp16", str(tmp_path / "cache"), max_batch=4, trt=trt, cuda=cuda)
    assert log["builds"] == 1 and not b.from_cache and Path(b.engine_path).is_file()
    assert log["flags"] == ["FP16"] and log["network_flags"] == [0]  # 10.3 is weakly typed: builder flag
    assert log["profiles"] == [{"input": ((1, 1, 32, 32), (1, 1, 32, 32), (4, 1, 32, 32))}]
    labels = jr.segment(b, tiny_images, batch=4)
    np.testing.assert_array_equal(labels, _ort_labels(tiny_onnx, tiny_images))
    assert b.last_compute_ms == 0.5
    b.close()
    assert cuda.mem == {}  # every device buffer freed

    again = jr.TrtBackend(str(tiny_onnx), "fp16", str(tmp_path / "cache"), max_batch=4, trt=trt, cuda=FakeCuda())
    assert again.from_cache and log["builds"] == 1 and again.engine_path == b.engine_path
    other = jr.TrtBackend(str(tiny_onnx), "int8", str(tmp_path / "cache"), max_batch=4, trt=trt, cuda=FakeCuda())
    assert not other.from_cache and log["builds"] == 2 and log["flags"][-2:] == ["FP16", "INT8"]


def test_tensorrt_path_strongly_typed_and_damaged_cache(tmp_path, tiny_onnx):
    """Mocked TensorRT 10.16 (none here): strongly typed network, no precision flags; a damaged
    cached engine is rebuilt instead of failing."""
    trt, log = fake_tensorrt("10.16.0")
    b = jr.TrtBackend(str(tiny_onnx), "fp16", str(tmp_path), max_batch=2, trt=trt, cuda=FakeCuda())
    assert log["network_flags"] == [1 << 3] and log["flags"] == [] and b.settings["strongly_typed"]
    Path(b.engine_path).write_bytes(b"damaged")
    again = jr.TrtBackend(str(tiny_onnx), "fp16", str(tmp_path), max_batch=2, trt=trt, cuda=FakeCuda())
    assert log["builds"] == 2 and not again.from_cache
    assert Path(again.engine_path).read_bytes().startswith(b"ENGINE")


def test_tensorrt_path_static_batch_engine(tmp_path, tiny_images):
    """Mocked TensorRT (none here): a batch-1 ONNX gives a batch-1 engine, also when loaded from the cache."""
    from tests.bench.conftest import make_onnx  # by package path: several conftest.py exist

    static = make_onnx(tmp_path / "static.onnx", dynamic=False)
    trt, log = fake_tensorrt("10.3.0")
    b = jr.TrtBackend(str(static), "fp32", str(tmp_path / "c"), max_batch=8, trt=trt, cuda=FakeCuda())
    assert b.max_batch == 1 and log["profiles"] == [] and log["flags"] == []
    cached = jr.TrtBackend(str(static), "fp32", str(tmp_path / "c"), max_batch=8, trt=trt, cuda=FakeCuda())
    assert cached.from_cache and cached.max_batch == 1
    np.testing.assert_array_equal(jr.segment(cached, tiny_images, batch=1), _ort_labels(static, tiny_images))


def test_runner_stops_when_its_session_closes(tmp_path, tiny_onnx, tiny_images):
    """A dropped SSH session closes the runner's stdin: it must stop, and stop tegrastats, at once."""
    import subprocess
    import sys

    fake = Path(__file__).resolve().parents[1] / "fixtures" / "jetson" / "fake_tegrastats.py"
    np.savez(tmp_path / "inputs.npz", images=tiny_images)
    argv = [sys.executable, jr.__file__, "run", "--onnx", str(tiny_onnx), "--inputs", "inputs.npz", "--out-dir", "out",
            "--duration", "60", "--tegrastats", str(fake), "--tegrastats-interval", "50", "--exit-on-stdin-eof"]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not subprocess.run(["pgrep", "-f", str(fake)], capture_output=True).stdout and time.monotonic() < deadline:
        time.sleep(0.1)  # wait until the timed loop (with tegrastats) is running
    assert proc.poll() is None, proc.stderr.read().decode()
    t0 = time.monotonic()
    proc.stdin.close()
    proc.wait(timeout=20)
    assert time.monotonic() - t0 < 10 and proc.returncode == jr.EXIT_RUN
    time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", str(fake)], capture_output=True).stdout == b""
    assert not (tmp_path / "out").exists()
