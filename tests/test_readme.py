"""The README's Quick tour runs as printed.

Every command line of the bash block under "## Quick tour" is run, in order, in one empty
directory (the tour writes its own data with ``pncd data synth`` and uses the small settings the
README prints), with the ``pncd`` and ``torchrun`` of this environment. A command that fails
fails the test with its output; the files each stage promises are checked at the end.
Each command gets 900 s, or ``PNCD_TOUR_TIMEOUT`` seconds (``.ci/emulated-avx2-suite`` raises it:
under QEMU the tour's OpenVINO INT8 export alone ran past 900 s).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
COMMAND_TIMEOUT_S = float(os.environ.get("PNCD_TOUR_TIMEOUT", "900"))


def tour_commands(text: str) -> list[str]:
    """The command lines of the first bash block after the "## Quick tour" heading
    (comments after two spaces and a '#' dropped; a trailing backslash joins lines)."""
    section = text.split("## Quick tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block, "README: no bash block under '## Quick tour'"
    joined = block.group(1).replace("\\\n", " ")
    cmds = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            cmds.append(line)
    return cmds


def test_tour_is_extracted():
    cmds = tour_commands(README.read_text())
    assert len(cmds) >= 10 and cmds[0].startswith("pncd ")
    stages = {shlex.split(c)[1] for c in cmds if c.startswith("pncd ")}
    assert {"data", "train", "eval", "distill", "export", "bench", "gate"} <= stages, stages


@pytest.mark.slow
def test_readme_quick_tour_runs_as_printed(tmp_path):
    bindir = Path(sys.executable).parent
    tools = {name: shutil.which(name, path=str(bindir)) for name in ("pncd", "torchrun")}
    if not tools["pncd"]:
        pytest.skip(f"no pncd console script beside {sys.executable}: install the package (pip install -e .)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for cmd in tour_commands(README.read_text()):
        argv = shlex.split(cmd)
        if argv[0] in tools:
            assert tools[argv[0]], f"{argv[0]} is not installed beside {sys.executable}"
            argv[0] = tools[argv[0]]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        assert proc.returncode == 0, f"README command failed ({proc.returncode}): {cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    # what the tour promises to leave behind
    assert (tmp_path / "runs/teacher/best.safetensors").is_file()
    assert (tmp_path / "runs/teacher/eval-test/metrics.json").is_file()
    assert (tmp_path / "runs/enet-pncd/config.json").is_file()
    assert (tmp_path / "exports/enet-ov-int8/manifest.json").is_file()
    assert (tmp_path / "exports/enet-ov-fp32/manifest.json").is_file()
    assert (tmp_path / "reports/enet/report.md").is_file()
    assert (tmp_path / "baselines/enet.json").is_file()
