"""The teacher-output cache of ``pncd distill --teacher-cache``.

On a CPU the frozen teacher's forward pass costs about as much as the student's whole training
step, at every step. With the cache the teacher runs once, before the first epoch, over every
un-augmented training slice (through the run's teacher runner, so ``--teacher-runtime`` still
applies), and its logits and tapped features are kept in memory as float16, one row per slice.

During training :class:`pncd.data.SegDataset` gives each slice's cached maps the same random
flip and rotation as its image and mask (the one draw of torchvision's parameters, recorded in
the same call and applied to each map in one channels-last ``grid_sample``; a map at a lower
resolution rotates about its own centre, which is where the image's centre falls), and the step
reads the teacher's outputs from the batch instead of running the teacher.
For an un-augmented slice the cached outputs are the teacher's (to float16 rounding). For an
augmented one they are the transformed outputs of the un-augmented slice, not the outputs of
the transformed slice: exact only for a teacher that commutes with flips and rotations, which a
convolutional network does only approximately. Corners that rotation brings in take each map's
value at its top-left pixel (background, like the image's fill), not zeros.

Nothing here draws from a random stream, so a cached run draws the same samples and
augmentation as a live run with the same seed (the two can be compared pair by pair), and a
resumed run rebuilds the same cache. Under torchrun every rank builds its own (every rank samples
from the whole training split).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pncd import console
from pncd.distill.teacher_runtime import TeacherRunner
from pncd.errors import PncdError

CACHE_DTYPE = torch.float16
# the most of this machine's RAM (or of the process's memory limit) the caches of all ranks on it may take
CACHE_RAM_SHARE = 0.5
BUILD_BATCH = 16  # slices per teacher call while building (the --batch of the run, when larger)


class TeacherCache:
    """The teacher's outputs of every training slice: ``logits`` (N, K, H, W) and one tensor per
    tapped feature (N, C, h, w), float16 on the CPU. ``cache[i]`` is slice i's maps, logits first."""

    def __init__(self, logits: torch.Tensor, feats: Sequence[torch.Tensor], seconds: float = 0.0, runtime: str = "?") -> None:
        if any(len(f) != len(logits) for f in feats):
            raise ValueError("every cached tensor needs one row per slice")
        self.logits, self.feats = logits, list(feats)
        self.seconds, self.runtime = float(seconds), runtime

    def __len__(self) -> int:
        return len(self.logits)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return (self.logits[index], *(f[index] for f in self.feats))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.logits, *self.feats))

    def record(self) -> dict[str, Any]:
        """What config.json records of the cache (``distill.teacher_cache_info``)."""
        return {"slices": len(self), "bytes": self.nbytes, "dtype": str(CACHE_DTYPE).removeprefix("torch."),
                "shapes": [list(t.shape[1:]) for t in (self.logits, *self.feats)], "runtime": self.runtime,
                "build_seconds": round(self.seconds, 2)}


def split_outputs(maps: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A batch of cached maps (as the DataLoader collates ``cache[i]``) as the teacher runner's
    ``(logits, [features])``."""
    return maps[0], list(maps[1:])


def memory_limit() -> int | None:
    """Bytes of memory this process may use: the machine's RAM, or a smaller cgroup limit
    (a container's); None where neither can be read. Deterministic, so every rank decides alike."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or a huge number: no limit
            limits.append(int(text))
    return min(limits) if limits else None


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def check_fits(need: int, slices: int, ranks: int = 1, limit: int | None = None, share: float = CACHE_RAM_SHARE) -> None:
    """Refuse (PncdError) a cache of ``need`` bytes per rank when ``ranks`` of them would take
    more than ``share`` of ``limit`` (default :func:`memory_limit`; None: not checked)."""
    limit = memory_limit() if limit is None else limit
    if limit is None or need * ranks <= share * limit:
        return
    each = f" on each of {ranks} processes" if ranks > 1 else ""
    raise PncdError(f"--teacher-cache needs {_gb(need)} for {slices} training slices{each}, more than "
                    f"{share:.0%} of this machine's {_gb(limit)} of memory; drop --teacher-cache (or use a smaller --size)")


def _store(out: list[torch.Tensor], outputs: list[torch.Tensor], lo: int, hi: int) -> None:
    """Rows lo:hi of the cache from one teacher call; an output float16 cannot hold is refused."""
    for o, t in zip(out, outputs):
        big = float(t.abs().amax()) if t.numel() else 0.0
        if big > torch.finfo(CACHE_DTYPE).max:
            raise PncdError(f"--teacher-cache: the teacher outputs values up to {big:.3g}, beyond float16's range "
                            f"({torch.finfo(CACHE_DTYPE).max:.0f}); drop --teacher-cache")
        o[lo:hi].copy_(t)  # to float16 and channels-last in one pass


def build_cache(runner: TeacherRunner, images: np.ndarray, device: torch.device | str = "cpu", batch: int = BUILD_BATCH,
                show: bool = True, ranks: int | None = None, limit: int | None = None) -> TeacherCache:
    """Run ``runner`` once over ``images`` (N, C, H, W, preprocessed, un-augmented) and keep its
    outputs as float16 on the CPU. The size is checked (:func:`check_fits`, for ``ranks`` caches
    on this machine: default ``LOCAL_WORLD_SIZE``) after the first slice, before anything else is
    held; ``show``: a progress display and a line with the cache's size (rank 0)."""
    n = len(images)
    if n == 0:
        raise PncdError("--teacher-cache: the train split has no slice to run the teacher on")
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if ranks is None else ranks
    t0 = time.perf_counter()

    def run(lo: int, hi: int) -> list[torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(images[lo:hi], dtype=np.float32)).to(device)
        logits, feats = runner(x)
        return [logits, *feats]

    first = run(0, 1)
    bad = [tuple(t.shape) for t in first if t.ndim != 4]
    if bad:
        raise PncdError(f"--teacher-cache caches maps (N, C, h, w), and the teacher gives an output of shape {bad[0]}; "
                        "drop --teacher-cache (or tap modules that output feature maps)")
    per_slice = sum(t[0].numel() for t in first) * torch.finfo(CACHE_DTYPE).bits // 8
    check_fits(per_slice * n, n, ranks, limit)
    # channels-last: a slice's maps then copy out and rotate fast (pncd.data.dataset.follow)
    out = [torch.empty((n, *t.shape[1:]), dtype=CACHE_DTYPE, memory_format=torch.channels_last) for t in first]
    _store(out, first, 0, 1)
    bar = console.progress(range(1, n, batch), desc="teacher cache", unit="batch", disable=not show)
    for lo in bar:
        hi = min(lo + batch, n)
        _store(out, run(lo, hi), lo, hi)
    cache = TeacherCache(out[0], out[1:], time.perf_counter() - t0, getattr(runner, "name", "?"))
    if show:
        console.info(f"teacher cache: {n} slices, {_gb(cache.nbytes)} (float16), built in {cache.seconds:.0f} s "
                     f"({cache.runtime}); augmented samples get its flipped and rotated maps")
    return cache
