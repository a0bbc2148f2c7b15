"""The distillation loss registry: every loss scores one :class:`DistillBatch`.

A loss is a :class:`DistillLoss` (an ``nn.Module``) registered by name with
:func:`register_loss`; ``pncd distill --weight NAME=W`` switches it on with weight W. Adding a
loss is one file and one line:

    # pncd/distill/mine.py
    @register_loss("mine", uses_features=False)
    class MineLoss(DistillLoss):
        def forward(self, batch: DistillBatch) -> torch.Tensor:
            return (batch.student_logits - batch.teacher_logits).square().mean()

and its module path in :data:`BUILTIN` below (or, outside pncd, an import of that file before
the command runs). ``from_context`` builds a loss from what it may need (the options, classes,
tapped channels, ...); the default calls the class without arguments.

Losses are built in :func:`loss_names` order (the built-ins in :data:`BUILTIN` order, then the
others in the order they were registered) inside the distillation heads' own RNG stream, and
their weighted values are added to ``Loss_seg`` in that order.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
from torch import nn

from pncd.registry import Registry

# name -> module that registers it: one line per built-in loss (their order is the sum's order)
BUILTIN: dict[str, str] = {
    "pmd": "pncd.distill.pmd",
    "rmd": "pncd.distill.rmd",
    "rd": "pncd.distill.rd",
    "pnscd": "pncd.distill.pnscd",
}


@dataclass
class DistillBatch:
    """What one training step gives every loss.

    ``student_feats[i]`` and ``teacher_feats[i]`` are the i-th tap pair (low first; the last
    is the ``high`` pair), empty when no active loss uses features. ``masks`` are the labels
    (B, H, W); the teacher's tensors carry no gradient.
    """

    images: torch.Tensor
    masks: torch.Tensor
    student_logits: torch.Tensor
    teacher_logits: torch.Tensor
    student_feats: list[torch.Tensor]
    teacher_feats: list[torch.Tensor]


@dataclass
class LossContext:
    """What a loss may need to be built: the distillation options, the number of classes, the
    channels of every tapped feature (student, teacher; pair order), M (the class-region
    samples of the training set) and the DDP gather function (identity on one process)."""

    options: Any  # pncd.distill.options.DistillOptions (which imports this module to name the losses)
    num_classes: int
    s_channels: list[int]
    t_channels: list[int]
    n_region_samples: int
    gather_fn: Callable[[torch.Tensor], torch.Tensor] | None = None


class DistillLoss(nn.Module):
    """Base of a registered loss: ``batch_loss(batch)`` returns a scalar tensor.

    A new loss implements ``forward(batch)``; the built-ins keep their tensor-level ``forward``
    (tested on its own) and override ``batch_loss`` to pick their inputs from the batch.
    """

    uses_features = True  # set by register_loss: whether it reads the tapped features

    @classmethod
    def from_context(cls, ctx: LossContext) -> DistillLoss:
        return cls()

    def batch_loss(self, batch: DistillBatch) -> torch.Tensor:
        return self(batch)


L = TypeVar("L", bound=type[DistillLoss])
LOSSES: Registry[type[DistillLoss]] = Registry("distillation loss")
_ORDER: list[str] = []


def register_loss(name: str, *, uses_features: bool = True) -> Callable[[L], L]:
    """Register a :class:`DistillLoss` subclass under ``name`` (``--weight NAME=W``)."""
    if "=" in name or "," in name or not name.strip():
        raise ValueError(f"a loss name may not be empty or contain '=' or ',': {name!r}")

    def deco(cls: L) -> L:
        if not (isinstance(cls, type) and issubclass(cls, DistillLoss)):
            raise TypeError(f"loss {name!r}: register a DistillLoss subclass, not {cls!r}")
        cls.uses_features = uses_features
        LOSSES.register(name, uses_features=uses_features)(cls)
        _ORDER.append(name)
        return cls

    return deco


def _import_builtin() -> None:
    for module in BUILTIN.values():
        importlib.import_module(module)


def loss_names() -> list[str]:
    """Every registered loss: the built-ins in :data:`BUILTIN` order, then the others."""
    _import_builtin()
    return [*BUILTIN, *(n for n in _ORDER if n not in BUILTIN)]


def get_loss(name: str) -> type[DistillLoss]:
    """The registered class; an unknown name is a PncdError that lists the valid ones."""
    _import_builtin()
    return LOSSES.get(name)


def build_losses(ctx: LossContext, names: list[str]) -> nn.ModuleDict:
    """The losses ``names`` (in that order), each from its ``from_context``."""
    return nn.ModuleDict({n: get_loss(n).from_context(ctx) for n in names})

