"""What the bench ran on and how it was started: this machine, the device, the command line."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

DEVICE_KEYS = ("device_model", "l4t_release", "machine", "cpu_model", "cpu_count", "gpu_name", "python",
               "numpy", "tensorrt", "onnxruntime", "onnxruntime_providers", "tegrastats")


def host_machine() -> dict[str, Any]:
    """What this machine is and how the bench used it (threads, GPU, driver)."""
    import torch

    from pncd.targets.cpu import cpu_model

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": None,
        "gpu_driver": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
            if out:
                name, _, drv = out[0].partition(",")
                info["gpu"] = info["gpu"] or name.strip()
                info["gpu_driver"] = drv.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def device_machine(env: dict[str, Any] | None) -> dict[str, Any] | None:
    """The device's environment as the Jetson runner probed it (None: everything ran here)."""
    if not env:
        return None
    return {k: env.get(k) for k in DEVICE_KEYS}


def command_line() -> str:
    """The command line this process was started with, as a user would type it."""
    import shlex

    script = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    if Path(script).name == "__main__.py":  # python -m PACKAGE
        prog = f"python -m {Path(script).parent.name}"
    elif script.endswith(".py"):
        prog = f"python {script}"
    else:  # a console script such as pncd
        prog = Path(script).name
    return " ".join([prog, *(shlex.quote(a) for a in sys.argv[1:])])
