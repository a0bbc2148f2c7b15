"""Device selection, seeding and torch.distributed setup shared by train and distill."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pncd.errors import PncdError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PncdError("--device cuda was asked for but no CUDA device is visible; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise PncdError(f"unknown --device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG a training step can touch, as tensors (loadable with weights_only=True)."""
    np_state: Any = np.random.get_state()  # ("MT19937", keys, pos, has_gauss, cached_gaussian)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(np_state[1].tobytes(), dtype=np.uint8).copy()),
        "numpy_pos": torch.tensor(np_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Dist:
    """Where this process stands in a torchrun job (world 1 when not under torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the torchrun process group if one is set up in the environment (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    return Dist(rank=rank, local_rank=local_rank, world=world), device


def shutdown_distributed() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def all_gather_varlen(t: "torch.Tensor") -> "torch.Tensor":
    """Concatenate a tensor over ranks along dim 0 when ranks hold different lengths.

    Identity outside torch.distributed. Used to keep PNSCD's memory identical on every rank.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return t
    world = torch.distributed.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    torch.distributed.all_gather(sizes, n)
    sizes_i = [int(s) for s in sizes]
    pad = max(sizes_i) - t.shape[0]
    padded = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]) if pad else t
    bufs = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(bufs, padded.contiguous())
    return torch.cat([b[:s] for b, s in zip(bufs, sizes_i)])


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once)."""
    usable = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        proc = phys = core = None
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "processor":
                proc = int(value)
            elif key == "physical id":
                phys = value
            elif key == "core id":
                core = value
            elif not key and proc is not None:  # end of one processor's block
                if proc in usable:
                    cores.add((phys or "0", core if core is not None else str(proc)))
                proc = phys = core = None
        if proc is not None and proc in usable:
            cores.add((phys or "0", core if core is not None else str(proc)))
    except OSError:
        pass
    return max(1, min(len(cores) or len(usable), len(usable)))


def default_threads() -> int:
    """Intra-op threads for one process: the physical cores, shared evenly among the processes of
    a torchrun job (``LOCAL_WORLD_SIZE``), at least one. Torch's own default ignores other
    processes, and on a shared 2-core machine two threads per process made training 7-35x
    slower than one under load; pass ``--threads 1`` when other jobs run beside this one."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, physical_cores() // local)


def apply_threads(threads: int | None, echo: bool = True) -> int:
    """Set torch's intra-op threads (``None``: :func:`default_threads`) and say so on stderr."""
    n = int(threads) if threads else default_threads()
    torch.set_num_threads(n)
    if echo:
        import sys

        why = "--threads" if threads else "default: physical cores / processes"
        print(f"threads: {n} ({why})", file=sys.stderr)
    return n
