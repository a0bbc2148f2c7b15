"""Per-backend and per-device adapters ("runners"), imported lazily.

A runner follows Polygraphy's life cycle: ``activate()`` / ``infer(feed) -> outputs`` /
``deactivate()``, usable as a context manager. It takes and returns dicts of named numpy
arrays and records the wall time of its last ``infer`` call in ``last_inference_time``.
"""
