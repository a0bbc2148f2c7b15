"""The Jetson path over a real SSH connection to a test sshd on 127.0.0.1 (see conftest.py).

No Jetson exists here: the remote python is this venv's, TensorRT is absent, so the runner takes
its documented ONNX Runtime fallback. What is real: ssh/scp, host-key checking, the remote
temporary directory, the runner script copied and run there, the outputs brought back, the
clean-up, and every error message.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pncd.errors import PncdError
from pncd.targets.jetson import JetsonOptions, run_on_device
from pncd.targets.ssh import SshTarget, normalize_options

pytestmark = pytest.mark.ssh

FAKE_TEGRASTATS = Path(__file__).resolve().parents[1] / "fixtures" / "jetson" / "fake_tegrastats.py"


def _pids_matching(text: str) -> set[int]:
    out = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()} - {os.getpid()}


def _ort_labels(onnx: Path, images: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": images})[0].argmax(1).astype(np.uint8)


def _opts(sshd, **kw) -> JetsonOptions:
    base = dict(host=sshd.host, ssh_options=tuple(sshd.options), remote_python=sshd.python, warmup=1, iters=5,
                batch=4, accuracy_batch=4, tegrastats="off", connect_timeout=5, run_timeout=120)
    base.update(kw)
    return JetsonOptions(**base)


def test_remote_run_onnxruntime_fallback_and_cleanup(sshd, tiny_onnx, tiny_images):
    before = _pids_matching(str(FAKE_TEGRASTATS)) | _pids_matching("jetson_runner.py run")
    logs: list[str] = []
    run = run_on_device(tiny_onnx, tiny_images, "fp32",
                        _opts(sshd, tegrastats=str(FAKE_TEGRASTATS), tegrastats_interval_ms=20, iters=40),
                        log=logs.append)
    res = run.result
    assert res["backend"] == "onnxruntime"
    assert "tensorrt not importable" in res["backend_reason"]
    # with tegrastats on, the loop lasts at least 5 sampling intervals (here 5 x 20 ms)
    assert len(res["latency_b1"]["end_to_end_ms"]) >= 40 and res["latency_b1"]["duration_s"] >= 0.1
    assert res["latency_batch"]["batch"] == 4 and len(res["latency_batch"]["end_to_end_ms"]) >= 5
    # the label maps computed on the "device" equal a local ONNX Runtime run
    np.testing.assert_array_equal(run.preds, _ort_labels(tiny_onnx, tiny_images))
    # tegrastats (a replaying stand-in: no Jetson here) was sampled during the timed loop
    assert res["tegrastats"]["lines"], "no tegrastats samples"
    assert res["power"]["power_source"] == "VDD_IN" and res["power"]["power_mean_mw"] > 4000
    assert res["power"]["energy_per_inference_mj"] > 0
    # nothing left behind on the device
    rdir = run.where["remote_workdir"]
    assert rdir.startswith("/") and not Path(rdir).exists()
    assert run.where["remote_cleanup"] == "removed"
    after = _pids_matching(str(FAKE_TEGRASTATS)) | _pids_matching("jetson_runner.py run")
    assert after - before == set(), "a process was left running"
    assert any("copying the runner" in m for m in logs)


def test_remote_failure_still_removes_workdir(sshd, tmp_path, tiny_images):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model")
    before = {p for p in Path("/tmp").glob("pncd-bench.*")}
    with pytest.raises(PncdError, match=r"the device runner failed on .*127\.0\.0\.1"):
        run_on_device(bad, tiny_images, "fp32", _opts(sshd))
    assert {p for p in Path("/tmp").glob("pncd-bench.*")} - before == set()


def test_forced_tensorrt_backend_without_tensorrt(sshd, tiny_onnx, tiny_images):
    with pytest.raises(PncdError, match="tensorrt is not importable") as e:
        run_on_device(tiny_onnx, tiny_images, "fp16", _opts(sshd, backend="tensorrt"))
    assert "\n" not in str(e.value)


def test_unreachable_host_closed_port(sshd, tiny_onnx, tiny_images):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = [o for o in sshd.options if not o.startswith("-p ")] + [f"-p {port}"]
    with pytest.raises(PncdError, match=r"cannot reach .*connection refused") as e:
        run_on_device(tiny_onnx, tiny_images, "fp32", _opts(sshd, ssh_options=tuple(opts)))
    assert "\n" not in str(e.value)


def test_authentication_refused_wrong_key(sshd, tiny_onnx, tiny_images):
    with pytest.raises(PncdError, match=r"refused the SSH authentication.*-i KEYFILE"):
        run_on_device(tiny_onnx, tiny_images, "fp32", _opts(sshd, ssh_options=tuple(sshd.wrong_key_options)))


def test_unknown_host_key_is_refused(sshd, tmp_path, tiny_onnx, tiny_images):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    opts = [o if "UserKnownHostsFile" not in o else f"-o UserKnownHostsFile={empty}" for o in sshd.options]
    with pytest.raises(PncdError, match="host key of .* is not in known_hosts"):
        run_on_device(tiny_onnx, tiny_images, "fp32", _opts(sshd, ssh_options=tuple(opts)))


def test_remote_python_missing(sshd, tiny_onnx, tiny_images):
    with pytest.raises(PncdError, match=r"remote python '/nonexistent' does not run on .*--remote-python") as e:
        run_on_device(tiny_onnx, tiny_images, "fp32", _opts(sshd, remote_python="/nonexistent"))
    assert "\n" not in str(e.value)


def test_remote_python_without_numpy(sshd, tiny_onnx, tiny_images):
    plain = "/usr/bin/python3"
    probe = subprocess.run([plain, "-c", "import numpy"], capture_output=True)
    if not os.path.exists(plain) or probe.returncode == 0:
        pytest.skip(f"{plain} is absent or has numpy; no numpy-less python to test with")
    with pytest.raises(PncdError, match=r"numpy is not importable by /usr/bin/python3 on .*python3-numpy"):
        run_on_device(tiny_onnx, tiny_images, "fp32", _opts(sshd, remote_python=plain))


def test_ssh_options_are_normalised_and_checked():
    assert normalize_options(["-p 2222", "-i /k -o IdentitiesOnly=yes", "-oBatchMode=yes", "-C"]) == [
        "-o", "Port=2222", "-i", "/k", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-C"]
    for unsafe in ("-o StrictHostKeyChecking=no", "-o UserKnownHostsFile=/dev/null", "-oStrictHostKeyChecking=accept-new"):
        with pytest.raises(PncdError, match="host key checking"):
            normalize_options([unsafe])
    with pytest.raises(PncdError, match="not supported"):
        normalize_options(["-R 8080:localhost:80"])
    with pytest.raises(PncdError, match="needs a value"):
        normalize_options(["-i"])
    t = SshTarget("me@example", ["-p 22"])
    argv = t.ssh_argv("true")
    assert argv[:3] == ["ssh", "-o", "StrictHostKeyChecking=yes"] and "BatchMode=yes" in argv
