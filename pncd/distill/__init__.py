"""PNCD distillation: the losses (PMD, RMD, RD, PNSCD and any registered one), their registry
and the typed entry point. Names are imported lazily so that importing ``pncd.distill`` stays
cheap (the CLI imports packages on every invocation).

- :func:`~pncd.distill.run.distill` ``(DistillRun) -> RunResult``, options in
  :mod:`pncd.distill.options` (:class:`DistillRun`, :class:`DistillOptions`)
- :func:`~pncd.distill.base.register_loss`, :class:`~pncd.distill.base.DistillLoss`,
  :class:`~pncd.distill.base.DistillBatch`: a new loss is one file and one registry line
- :class:`~pncd.distill.pmd.PMDLoss`     prediction maps, KL(p_t || p_s) at temperature T
- :class:`~pncd.distill.rmd.RMDLoss`     importance (energy) maps of tap pairs
- :class:`~pncd.distill.rd.RDLoss`       cosine affinities between class-region vectors
- :class:`~pncd.distill.pnscd.PNSCDLoss` class-guided noise-contrastive loss with a memory
- :func:`~pncd.distill.region.region_vectors` region vectors shared by RD and PNSCD
- :func:`~pncd.distill.cache.build_cache` the teacher's outputs once per training slice (``--teacher-cache``)
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "PMDLoss": "pncd.distill.pmd",
    "RMDLoss": "pncd.distill.rmd",
    "RDLoss": "pncd.distill.rd",
    "PNSCDLoss": "pncd.distill.pnscd",
    "region_vectors": "pncd.distill.region",
    "DistillBatch": "pncd.distill.base",
    "DistillLoss": "pncd.distill.base",
    "LOSSES": "pncd.distill.base",
    "register_loss": "pncd.distill.base",
    "DistillOptions": "pncd.distill.options",
    "DistillRun": "pncd.distill.options",
    "distill": "pncd.distill.run",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pncd.distill' has no attribute {name!r}")
