"""The device-side runner on this machine: locally (no SSH), and its TensorRT path on a mock.

TensorRT cannot be installed here (the ``tensorrt`` wheels' libraries come from outside the
package registries this machine reaches), so ``test_tensorrt_path_*`` drive
the runner's ``TrtBackend`` with MOCKS: a stand-in ``tensorrt`` module and stand-ins for the
Polygraphy loaders and ``TrtRunner`` it uses; the "engine" executes the ONNX with ONNX Runtime.
What these tests check is the runner's own logic around TensorRT — engine cache naming and
reuse, the dynamic-batch optimisation profile, precision flags for weakly and strongly typed
TensorRT, releasing the runner, output shapes — not TensorRT or Polygraphy themselves.
"""

from __future__ import annotations

import time
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pncd.errors import PncdError
from pncd.targets import jetson_backends as jb
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
    a = jb.engine_cache_name("ab" * 32, "10.3.0", "Orin (nvgpu)", "fp16", 8)
    assert a == f"{'ab' * 10}-trt10.3.0-orin-nvgpu-fp16-b8.engine"
    assert a != jb.engine_cache_name("ab" * 32, "10.16.1", "Orin (nvgpu)", "fp16", 8)
    assert a != jb.engine_cache_name("ab" * 32, "10.3.0", "Orin (nvgpu)", "int8", 8)
    assert a != jb.engine_cache_name("cd" * 32, "10.3.0", "Orin (nvgpu)", "fp16", 8)


# ------------------------------------------------------------------ mock TensorRT (see docstring)


def _input_shape(session) -> tuple:
    return tuple(-1 if not isinstance(d, int) else d for d in session.get_inputs()[0].shape)


class _Tensor:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class _Network:
    def __init__(self, onnx: bytes):
        self.onnx = onnx

    def get_input(self, i):
        return _Tensor("input", _input_shape(ort.InferenceSession(self.onnx, providers=["CPUExecutionProvider"])))


class _Profile(dict):
    def add(self, name, lo, opt, hi):
        self[name] = (lo, opt, hi)
        return self


class _Engine:
    num_io_tensors = 2

    def __init__(self, blob: bytes, log: dict):
        self.s, self.log = ort.InferenceSession(blob[len(b"ENGINE"):], providers=["CPUExecutionProvider"]), log

    def get_tensor_name(self, i):
        return ["input", "logits"][i]

    def get_tensor_mode(self, name):
        return "IN" if name == "input" else "OUT"

    def get_tensor_shape(self, name):
        return _input_shape(self.s)

    def get_tensor_profile_shape(self, name, profile):
        return self.log["configs"][-1]["profiles"][profile][name]


class _TrtRunner:
    def __init__(self, engine):
        self.engine, self.active = engine, False
        engine.log["runners"].append(self)

    def activate(self):
        self.active = True

    def deactivate(self):
        self.active = False

    def infer(self, feed):
        assert self.active
        return {"logits": self.engine.s.run(None, {"input": feed["input"]})[0]}


def fake_tensorrt(version: str):
    """Stand-ins for ``tensorrt`` and Polygraphy's ``polygraphy.backend.trt`` (MOCKS: neither can run
    here); the "engine" is the ONNX itself, executed by ONNX Runtime. ``log`` records what the
    runner asked Polygraphy for."""
    log: dict = {"builds": 0, "networks": [], "configs": [], "runners": []}

    def network_from_onnx_path(path, strongly_typed=False):
        log["networks"].append({"strongly_typed": strongly_typed})
        return lambda: ("builder", _Network(Path(path).read_bytes()), "parser")

    def create_config(fp16=None, int8=None, profiles=None, memory_pool_limits=None):
        log["configs"].append({"fp16": fp16, "int8": int8, "profiles": [dict(p) for p in profiles or []]})
        return log["configs"][-1]

    def engine_bytes_from_network(network, config=None):
        def build():
            log["builds"] += 1
            return b"ENGINE" + network[1].onnx

        return build

    def engine_from_bytes(blob):
        def load():
            if not bytes(blob).startswith(b"ENGINE"):
                raise RuntimeError("Could not deserialize engine")  # what Polygraphy's critical() raises
            return _Engine(bytes(blob), log)

        return load

    ns = types.SimpleNamespace
    trt = ns(__version__=version, TensorIOMode=ns(INPUT="IN", OUTPUT="OUT"), MemoryPoolType=ns(WORKSPACE="WORKSPACE"))
    poly = ns(NetworkFromOnnxPath=network_from_onnx_path, Profile=_Profile, CreateConfig=create_config,
              EngineBytesFromNetwork=engine_bytes_from_network, EngineFromBytes=engine_from_bytes, TrtRunner=_TrtRunner)
    return trt, poly, log


def test_tensorrt_path_builds_once_then_uses_cache(tmp_path, tiny_onnx, tiny_images):
    """Mocked TensorRT and Polygraphy (none here): the engine is built once, then taken from the cache."""
    trt, poly, log = fake_tensorrt("10.3.0")
    b = jb.TrtBackend(str(tiny_onnx), "fp16", str(tmp_path / "cache"), max_batch=4, trt=trt, poly=poly)
    assert log["builds"] == 1 and not b.from_cache and Path(b.engine_path).is_file()
    # 10.3 is weakly typed: FP16 asked for with the builder flag, the network not strongly typed
    assert log["networks"] == [{"strongly_typed": False}] and log["configs"][0]["fp16"] and not log["configs"][0]["int8"]
    assert log["configs"][0]["profiles"] == [{"input": ((1, 1, 32, 32), (1, 1, 32, 32), (4, 1, 32, 32))}]
    assert b.max_batch == 4 and not b.settings["strongly_typed"]
    labels = jr.segment(b, tiny_images, batch=4)
    np.testing.assert_array_equal(labels, _ort_labels(tiny_onnx, tiny_images))
    b.close()
    assert not log["runners"][0].active  # the TrtRunner (and its CUDA buffers) released

    again = jb.TrtBackend(str(tiny_onnx), "fp16", str(tmp_path / "cache"), max_batch=4, trt=trt, poly=poly)
    assert again.from_cache and log["builds"] == 1 and again.engine_path == b.engine_path
    other = jb.TrtBackend(str(tiny_onnx), "int8", str(tmp_path / "cache"), max_batch=4, trt=trt, poly=poly)
    assert not other.from_cache and log["builds"] == 2
    assert log["configs"][-1]["fp16"] and log["configs"][-1]["int8"]


def test_tensorrt_path_strongly_typed_and_damaged_cache(tmp_path, tiny_onnx):
    """Mocked TensorRT 10.16 and Polygraphy (none here): strongly typed network, no precision flags;
    a damaged cached engine is rebuilt instead of failing."""
    trt, poly, log = fake_tensorrt("10.16.0")
    b = jb.TrtBackend(str(tiny_onnx), "fp16", str(tmp_path), max_batch=2, trt=trt, poly=poly)
    assert log["networks"] == [{"strongly_typed": True}] and b.settings["strongly_typed"]
    assert not log["configs"][0]["fp16"] and not log["configs"][0]["int8"]
    Path(b.engine_path).write_bytes(b"damaged")
    again = jb.TrtBackend(str(tiny_onnx), "fp16", str(tmp_path), max_batch=2, trt=trt, poly=poly)
    assert log["builds"] == 2 and not again.from_cache
    assert Path(again.engine_path).read_bytes().startswith(b"ENGINE")


def test_tensorrt_path_static_batch_engine(tmp_path, tiny_images):
    """Mocked TensorRT and Polygraphy (none here): a batch-1 ONNX gives a batch-1 engine, also from the cache."""
    from tests.bench.conftest import make_onnx  # by package path: several conftest.py exist

    static = make_onnx(tmp_path / "static.onnx", dynamic=False)
    trt, poly, log = fake_tensorrt("10.3.0")
    b = jb.TrtBackend(str(static), "fp32", str(tmp_path / "c"), max_batch=8, trt=trt, poly=poly)
    assert b.max_batch == 1 and log["configs"][0]["profiles"] == [] and not log["configs"][0]["fp16"]
    cached = jb.TrtBackend(str(static), "fp32", str(tmp_path / "c"), max_batch=8, trt=trt, poly=poly)
    assert cached.from_cache and cached.max_batch == 1
    np.testing.assert_array_equal(jr.segment(cached, tiny_images, batch=1), _ort_labels(static, tiny_images))


def test_runner_stops_when_its_session_closes(tmp_path, tiny_onnx, tiny_images):
    """A dropped SSH session closes the runner's stdin: it must stop, and stop tegrastats, at once."""
    import subprocess
    import sys

    fake = Path(__file__).resolve().parents[1] / "fixtures" / "jetson" / "fake_tegrastats.py"
    np.savez(tmp_path / "inputs.npz", images=tiny_images)
    from pncd.targets.jetson import runner_args

    opts = JetsonOptions(duration=60, tegrastats=str(fake), tegrastats_interval_ms=50)
    argv = [sys.executable, jr.__file__, *runner_args(str(tiny_onnx), "fp32", opts), "--exit-on-stdin-eof"]
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


def test_device_files_run_without_pncd(tmp_path):
    """The files the host copies to the device import nothing from pncd: probe runs without
    site-packages, from a directory holding only those files and this machine's Polygraphy zip."""
    import json
    import shutil
    import subprocess
    import sys

    from pncd.targets.jetson import DEVICE_FILES, polygraphy_zip

    for f in DEVICE_FILES:
        shutil.copy(f, tmp_path / f.name)
    assert polygraphy_zip(tmp_path) is not None  # polygraphy is a dev dependency here
    # -S: no site-packages, so neither pncd (an editable install), numpy nor an installed Polygraphy
    p = subprocess.run([sys.executable, "-S", "jetson_runner.py", "probe"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"})
    assert p.returncode == 0, p.stderr
    probe = json.loads(p.stdout)
    assert probe["runner_version"] == jr.RUNNER_VERSION and probe["numpy"] is None  # no site-packages at all
    assert probe["polygraphy"] is not None, "polygraphy.zip is importable on the device side"


def test_missing_polygraphy_falls_back_or_says_what_to_install(monkeypatch, tiny_onnx):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))  # a stand-in
    monkeypatch.setitem(sys.modules, "polygraphy.backend.trt", None)
    args = types.SimpleNamespace(backend="auto", onnx=str(tiny_onnx), threads=1, precision="fp32", cache_dir="x")
    backend, reason = jb.make_backend(args, 4)
    assert backend.name == "onnxruntime" and reason.startswith("fallback: polygraphy not importable")
    args.backend = "tensorrt"
    with pytest.raises(jb.RunnerError, match="polygraphy is not importable .*pip install polygraphy on the device"):
        jb.make_backend(args, 4)
