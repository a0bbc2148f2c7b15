"""Typed options of ``pncd qat`` (:func:`pncd.qat.run_qat`), torch-free: the one definition of
their defaults, help texts and ranges (``metadata=cli(...)``, :mod:`pncd.optspec`), from which
the click options of :mod:`pncd.commands.qat` are generated."""

from __future__ import annotations

from dataclasses import dataclass, field

from pncd.optspec import cli


@dataclass
class QatOptions:
    teacher: str = field(default="self", metadata=cli(  # "self" (the float student) or a run directory
        "Distillation teacher: 'self' (the float student) or a run directory (e.g. the PNCD teacher)."))
    steps: int = field(default=300, metadata=cli("Fine-tuning steps.", low=1))
    lr: float = field(default=1e-5, metadata=cli(low=0, low_open=True))
    batch: int = field(default=8, metadata=cli(low=1))
    weights: dict[str, float] = field(default_factory=lambda: {"pmd": 1.0}, metadata=cli(
        "A logit distillation loss and its weight (repeatable; default pmd=1).", flag="--weight", multiple=True,
        metavar="NAME=W"))
    temperature: float = field(default=4.0, metadata=cli("PMD temperature.", low=0, low_open=True))
    lesion_fraction: float = field(default=0.5, metadata=cli("Share of sampled slices that hold a lesion (0: uniform).",
                                                             low=0, high=1))
    calib_images: int = field(default=128, metadata=cli("Training images NNCF sets the starting ranges from.", low=1))
    eval_every: int = field(default=100, metadata=cli("Score the validation split every N steps; the best step is kept.",
                                                      low=1))
    seed: int = field(default=0, metadata=cli(low=0))
    keep_float: str = field(default="first", metadata=cli(  # "first": as pncd export's PTQ; "none"
        "first: the layers reading the image stay in float (as pncd export's INT8 default); none: quantize every "
        "layer.", choices=("first", "none")))
    int8_cpu: str = field(default="any", metadata=cli(  # "any": 7-bit weights, correct without VNNI; "vnni": 8-bit
        "any: 7-bit weights (NNCF's overflow fix), so the INT8 ONNX computes the same on every x86 CPU; vnni: 8-bit "
        "weights, for CPUs with VNNI or AMX only (pncd bench refuses it elsewhere).", choices=("any", "vnni")))
