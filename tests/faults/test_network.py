"""Nothing goes over the network unasked: exports to every target and a bench open no socket to a
non-local address and look up no host name, with OpenVINO's and NNCF's usage telemetry off by
default; ``--allow-telemetry`` lets them (the control that shows the audit hook sees it).

Each command runs in a subprocess under a Python audit hook that logs every socket connect,
bind, sendto and host-name lookup of the process, and of the processes it forks (the telemetry
sender forks), to a file.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.fault_helpers import ok

DRIVER = r"""
import json, os, sys
LOG = os.environ["PNCD_NET_LOG"]
EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.sendto",
          "socket.sendmsg", "socket.bind")
def hook(event, args):
    if event in EVENTS:
        with open(LOG, "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "event": event, "args": [repr(a) for a in args]}) + "\n")
sys.addaudithook(hook)
from pncd.cli import main
main(sys.argv[1:])
"""

LOCAL_NAMES = {"localhost", "'localhost'", "None", "''", "b''"}


def _local(arg: str) -> bool:
    """Whether one logged argument names this machine (loopback, a Unix socket, no host)."""
    text = arg.strip("()").split(",")[0].strip().strip("'\"b")
    if arg in LOCAL_NAMES or text in ("", "localhost", "None") or text.startswith("/"):
        return True
    try:
        return ipaddress.ip_address(text).is_loopback or ipaddress.ip_address(text).is_unspecified
    except ValueError:
        return False


def run_logged(tmp_path: Path, name: str, *args) -> list[dict]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    log = tmp_path / f"{name}.jsonl"
    env = {**os.environ, "PNCD_NET_LOG": str(log), "HOME": str(tmp_path / "home")}
    for name in ("CI", "PNCD_ALLOW_TELEMETRY", "PNCD_CI_BEFORE_OPT_OUT"):  # as on a user's machine: the
        env.pop(name, None)  # opt-out must come from pncd itself, not from this test process's environment
    (tmp_path / "home").mkdir(exist_ok=True)
    ok(subprocess.run([sys.executable, str(driver), *map(str, args)], env=env, capture_output=True, text=True,
                      timeout=900))
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def non_local(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] != "socket.bind" and not _local(e["args"][1] if e["event"] == "socket.connect"
                                                                            else e["args"][0])]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_exports_and_bench_stay_on_this_machine(tiny_run, tmp_path):
    events = []
    for target, precision in (("openvino", "int8"), ("onnxruntime", "fp32"), ("tensorrt", "int8"), ("jetson", "fp32")):
        int8 = ["--no-strict", "--calib-size", "8"] if precision == "int8" else []
        events += run_logged(tmp_path, f"{target}-{precision}", "export", tiny_run, "--target", target, "--precision",
                             precision, *int8, "--parity-images", "4", "--out", tmp_path / f"{target}-{precision}")
    events += run_logged(tmp_path, "bench", "bench", tmp_path / "openvino-int8", tmp_path / "onnxruntime-fp32",
                         "--iters", "3", "--warmup", "1", "--out", tmp_path / "report")
    assert non_local(events) == []
    assert not (tmp_path / "home" / "intel").exists()  # no telemetry client id written


@pytest.mark.skipif(importlib.util.find_spec("openvino_telemetry") is None, reason="openvino-telemetry is not installed")
def test_allow_telemetry_lets_it_through_and_the_hook_sees_it(tiny_run, tmp_path):
    """The control: with --allow-telemetry OpenVINO's conversion looks up its analytics host,
    which shows that the hook above would have seen a connection attempt."""
    events = run_logged(tmp_path, "allowed", "--allow-telemetry", "export", tiny_run, "--target", "openvino",
                        "--precision", "fp32", "--parity-images", "4", "--out", tmp_path / "ov")
    assert non_local(events), events
