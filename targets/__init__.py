"""Export targets and their runners (``TARGETS``: one :class:`~pncd.targets.base.Target` per backend).

A runner follows Polygraphy's life cycle: ``activate()`` / ``infer(feed) -> outputs`` /
``deactivate()``, usable as a context manager. It takes and returns dicts of named numpy
arrays and records the wall time of its last ``infer`` call in ``last_inference_time``.
``pncd.targets.TARGETS`` is imported on first use (the backend modules import their runtimes
lazily in any case).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("TARGETS", "register_target", "load_runner"):
        from pncd.targets import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'pncd.targets' has no attribute {name!r}")
