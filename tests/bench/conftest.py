"""Fixtures for the bench tests: a real sshd on 127.0.0.1 and tiny ONNX models.

The sshd runs as the current user with its own configuration, host key, client key and
known_hosts file in a temporary directory, on a random free port; it is stopped at teardown.
Without the ``sshd`` binary the SSH tests skip and say how to install it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


@dataclass
class Sshd:
    host: str
    port: int
    options: list[str]  # what a user passes with --ssh-option
    wrong_key_options: list[str]
    dir: Path
    python: str  # a remote python with numpy and onnxruntime (this venv's)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pncd-test", "-f", str(path)], check=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> Sshd:
    binary = shutil.which("sshd") or next((c for c in SSHD_CANDIDATES if os.path.exists(c)), None)
    if binary is None or shutil.which("ssh") is None or shutil.which("scp") is None:
        pytest.skip("sshd/ssh/scp not installed: apt-get install -y openssh-server openssh-client (done by .ci/run)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key", "wrong_key"):
        _keygen(d / name)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (d / "sshd_config").write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {d / 'host_key'}",
                f"PidFile {d / 'sshd.pid'}",
                f"AuthorizedKeysFile {d / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "MaxStartups 100",
                "MaxSessions 50",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory sshd insists on
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
    common = ["-F /dev/null", f"-o UserKnownHostsFile={d / 'known_hosts'}", "-o IdentitiesOnly=yes", f"-p {port}"]
    info = Sshd(
        host=f"{getpass.getuser()}@127.0.0.1",
        port=port,
        options=[*common, f"-i {d / 'client_key'}"],
        wrong_key_options=[*common, f"-i {d / 'wrong_key'}"],
        dir=d,
        python=sys.executable,
    )
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            log.flush()
            pytest.fail(f"sshd exited at start: {(d / 'sshd.log').read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("sshd did not start listening within 15 s")
            time.sleep(0.1)
    yield info
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def make_onnx(path: Path, channels: int = 1, classes: int = 2, size: int = 32, dynamic: bool = True, seed: int = 0) -> Path:
    """A tiny conv net exported to ONNX (weights inline, no side file)."""
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, classes, 1)
    ).eval()
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    torch.onnx.export(
        net, (torch.zeros(1, channels, size, size),), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes=axes, dynamo=False, opset_version=17,
    )
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((6, 1, 32, 32)).astype(np.float32)
