"""Whether a training run fits the machine's memory, checked before anything large is allocated.

A network's activations grow with the batch and with the square of the input side: ``--size
4096`` or ``--batch 100000`` asks for far more than any machine has, and without a check the run
fails deep inside torch ("unexpected RuntimeError", a 17 TB allocation) or swaps the machine to a
halt. :func:`activation_bytes` measures what one sample's forward pass keeps (the outputs of every
layer, the least that backpropagation holds) on a copy of the network on torch's ``meta`` device,
which computes shapes and allocates nothing; :func:`check_fits` compares ``batch`` times that with
the memory the device has free, and refuses a run that cannot fit in one line.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from pncd.errors import PncdError


def activation_bytes(model: nn.Module, channels: int, size: int) -> int | None:
    """Bytes (float32) of the outputs of ``model``'s layers for one ``channels`` x ``size`` x
    ``size`` input; None when the network cannot run on the meta device (then nothing is checked)."""
    total = 0

    def add(_m: nn.Module, _i: object, out: object) -> None:
        nonlocal total
        outs = out if isinstance(out, (tuple, list)) else [out]
        total += sum(t.numel() * 4 for t in outs if isinstance(t, torch.Tensor))

    try:
        probe = copy.deepcopy(model).to("meta").eval()
        for m in probe.modules():
            m._forward_hooks.clear()  # the copy's hooks would write into the original's (feature taps)
        hooks = [m.register_forward_hook(add) for m in probe.modules() if not any(True for _ in m.children())]
        with torch.no_grad():
            probe(torch.empty(1, channels, size, size, device="meta"))
    except Exception:  # an op without a meta kernel, a model that cannot be copied: no estimate
        return None
    del hooks, probe
    return total


def available_bytes(device: torch.device) -> tuple[int, str] | None:
    """Free memory of ``device`` (a CUDA device's free memory; for the CPU, MemAvailable and any
    cgroup limit) and how to name it; None when the system cannot tell."""
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except Exception:
            return None
        return int(free), f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type != "cpu":
        return None
    avail = _meminfo_available()
    limit = _cgroup_room()
    if avail is None and limit is None:
        return None
    return min(x for x in (avail, limit) if x is not None), "this machine"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """What a cgroup v2 memory limit leaves (limit - usage), None without one."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((base / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def check_fits(per_sample: int | None, batch: int, size: int, device: torch.device, amp: bool, name: str) -> None:
    """PncdError when ``batch`` samples of ``per_sample`` activation bytes (half under mixed
    precision) cannot fit in the free memory of ``device``; nothing when either is unknown."""
    room = available_bytes(device) if per_sample else None
    if per_sample is None or room is None:
        return
    need = per_sample * batch // (2 if amp else 1)
    free, where = room
    if need <= free:
        return
    gib = lambda b: f"{b / 2**30:.1f} GiB"  # noqa: E731
    fit = free * (2 if amp else 1) // per_sample
    what = f"lower --batch to {fit} or --size" if fit >= 1 else "lower --size"
    asked = f"--size {size} with --batch {batch}" if batch > 1 else f"--size {size}"
    each = "its activations" if batch > 1 else "the activations of a single image"
    raise PncdError(f"{asked}: training {name} needs at least {gib(need)} for {each}, but {where} has {gib(free)} "
                    f"free; {what} (nothing was changed)")
