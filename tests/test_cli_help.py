"""``pncd --help`` and every ``pncd COMMAND --help`` answer without importing torch, and show examples.

Importing torch takes 2 s on an idle 2-core machine and 8-20 s under load; help must not wait
for it. Each command's help is produced in a fresh interpreter, which then reports whether
torch (or OpenVINO / ONNX Runtime) got imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pncd.cli import COMMANDS

PROBE = """
import json, sys
from click.testing import CliRunner
from pncd.cli import cli
args = sys.argv[1:]
result = CliRunner().invoke(cli, [*args, "--help"])
heavy = sorted(m for m in ("torch", "openvino", "onnxruntime", "nncf") if m in sys.modules)
print(json.dumps({"exit": result.exit_code, "heavy": heavy, "usage": result.output.splitlines()[:1],
                  "example": "Example" in result.output}))
"""


@pytest.mark.parametrize("args", [[], *([name] for name in COMMANDS), ["data", "check"], ["data", "synth"],
                                  ["data", "split"]],
                         ids=lambda a: " ".join(a) or "pncd")
def test_help_imports_no_heavy_library(args):
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["exit"] == 0 and res["usage"][0].startswith("Usage:"), res
    assert res["heavy"] == [], f"pncd {' '.join(args)} --help imported {res['heavy']}"
    assert res["example"], f"pncd {' '.join(args)} --help shows no example"
