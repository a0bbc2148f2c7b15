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


# ---------------------------------------------------------------------------------------------
# A trained run and its exports, for the end-to-end bench and gate tests (built once per session)
# ---------------------------------------------------------------------------------------------


@dataclass
class Exported:
    data: Path  # data set root (2-D PNG cases: a bright disk "lesion" on a noisy background)
    run: Path  # trained ENet run directory (config.json + best.safetensors)
    good: Path  # pncd export of the run: onnxruntime fp32, dynamic batch
    bad: Path  # the same artifact with its ONNX weights perturbed (loses Dice)


def make_disk_data(root: Path, n: int = 24, size: int = 32, seed: int = 0) -> Path:
    """A tiny, easily learnt 2-D data set: one case per PNG image, lesion = a bright disk."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        r = rng.uniform(size / 8, size / 3.5)
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img = 60 + 25 * rng.standard_normal((size, size)) + 120 * m
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"case{i:02d}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(root / "labels" / f"case{i:02d}.png")
    return root


def train_tiny_run(data: Path, out: Path, steps: int = 50, size: int = 32, seed: int = 0) -> Path:
    """ENet trained a few steps with plain torch + SegLoss, saved as a pncd run directory."""
    import torch

    from pncd.checkpoint import save_weights, write_run_config
    from pncd.data import DataSpec, load_split
    from pncd.losses import SegLoss
    from pncd.models import create

    torch.manual_seed(seed)
    spec = DataSpec(root=str(data), size=size)
    train = load_split(spec, "train")
    model = create("enet", in_channels=1, num_classes=2)
    loss_fn = SegLoss(2)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    x, y = torch.from_numpy(train.images), torch.from_numpy(train.masks)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (8,), generator=g)
        loss = loss_fn(model(x[idx]), y[idx])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out.mkdir(parents=True)
    save_weights(model, out / "best.safetensors")
    write_run_config(out, model, spec.to_dict(), {"steps": steps, "lr": 5e-3, "batch": 8}, kind="train")
    return out


def perturb_onnx_weights(src: Path, dst: Path, scale: float = 0.6, seed: int = 1) -> Path:
    """Copy an export directory, adding Gaussian noise (``scale`` x each tensor's std) to its ONNX weights."""
    import onnx
    from onnx import numpy_helper

    from pncd.export.manifest import file_entries
    from pncd.io import read_json, write_json

    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "model.onnx"))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.size > 1:
            noisy = w + rng.standard_normal(w.shape).astype(np.float32) * scale * (float(w.std()) + 1e-8)
            init.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), init.name))
    onnx.save(model, str(dst / "model.onnx"))
    man = read_json(dst / "manifest.json")
    man["files"] = file_entries(dst)  # keep the manifest's checksums true to the changed file
    write_json(dst / "manifest.json", man)
    return dst


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Exported:
    from pncd.cli import main

    base = tmp_path_factory.mktemp("e2e")
    data = make_disk_data(base / "data")
    run = train_tiny_run(data, base / "runs" / "enet-disks")
    good = base / "exports" / "enet-ort-fp32"
    try:
        main(["export", str(run), "--target", "onnxruntime", "--precision", "fp32", "--dynamic-batch",
              "--parity-images", "4", "--out", str(good)])
    except SystemExit as e:
        assert e.code in (0, None), f"pncd export failed with exit status {e.code}"
    bad = perturb_onnx_weights(good, base / "exports" / "enet-ort-fp32-perturbed")
    return Exported(data=data, run=run, good=good, bad=bad)
