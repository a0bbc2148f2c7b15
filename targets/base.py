"""The runner base class every backend follows."""

from __future__ import annotations

import importlib
import time
from typing import Any

import numpy as np

from pncd.errors import PncdError, RunFailed


def require(module: str, package: str | None = None, purpose: str = "") -> Any:
    """Import an optional backend, or fail with the exact package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pkg = package or module
        what = f" for {purpose}" if purpose else ""
        raise RunFailed(f"{module} is not installed{what}: pip install '{pkg}' ({e})") from None


class Runner:
    """Base runner: subclasses implement ``_activate``, ``_infer`` and ``_deactivate``."""

    name = "runner"

    def __init__(self) -> None:
        self.is_active = False
        self.last_inference_time: float | None = None

    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"{self.name}: call activate() before infer()")
        t0 = time.perf_counter()
        out = self._infer(feed)
        self.last_inference_time = time.perf_counter() - t0
        return out

    def input_names(self) -> list[str]:
        raise NotImplementedError

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def _activate(self) -> None:
        raise NotImplementedError

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _deactivate(self) -> None:
        pass
