"""The distillation objective (:class:`PNCD`) and its trainer: ``Loss_seg + sum of w * L`` over
the active registered losses (by default ``a*PMD + b1*RMD + b2*RD + b3*PNSCD``).

The teacher is frozen (eval mode, ``torch.inference_mode``, no gradients) and its forward
pass runs once per batch, in eager torch or through OpenVINO, float32 or INT8 (``--teacher-runtime``,
:mod:`pncd.distill.teacher_runtime`); its logits and tapped features feed every module. Features are
taken by forward hooks keyed by module path (``pncd.models.FeatureTaps``), so a teacher the
user wrote works too (``--teacher package.module:function --teacher-weights FILE``). With
``--teacher-cache`` it runs once per training slice before the first epoch instead, and the
steps read its (transformed) outputs from the batch (:mod:`pncd.distill.cache`).

Taps default to each network's declared ``low`` and ``high`` features (EMKD's choice); the
``high`` pair (the last one) feeds PNSCD. The projection heads and the PNSCD memory live only
here: the saved student is a plain ``pncd.models`` checkpoint.

DDP: the PNSCD memory is kept identical on every rank by gathering the teacher embeddings
and their labels from all ranks before each memory update; the heads' gradients are
all-reduced like the student's.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import nn

from pncd.distill.base import DistillBatch, DistillLoss, LossContext, build_losses, get_loss
from pncd.distill.cache import TeacherCache, split_outputs
from pncd.distill.options import DEFAULT_WEIGHTS, MODULES, DistillOptions
from pncd.distill.teacher import best_val_dice, check_teacher_dice, fuse_conv_bn, load_teacher, prepare_teacher, resolve_taps
from pncd.distill.teacher_runtime import build_runner, runtime_record
from pncd.models import FeatureTaps
from pncd.training.loop import Trainer

HEAD_SEED_OFFSET = 0x5EED_0001  # the distillation heads' RNG stream: torch.manual_seed(offset + run seed)


class PNCD(nn.Module):
    """The distillation objective: a frozen teacher, feature hooks on both networks, and the
    active registered losses (:mod:`pncd.distill.base`; PNSCD holds heads and a memory), each
    scoring the step's :class:`~pncd.distill.base.DistillBatch`.

    ``forward(student, images, masks, seg_loss, kd_scale)`` runs the teacher once, the student
    once, and returns the dict of every component plus the weighted ``loss``
    (``Loss_seg + kd_scale * sum of w * L``; ``kd_scale`` is the warm-up factor).

    The losses (PNSCD's heads: the only random initialisation that exists only in
    distillation) are built, in the registry's order, inside ``torch.random.fork_rng`` seeded from ``seed``, so building
    them leaves the global RNG untouched: a distilled run and the run of the student alone with
    the same seed share the student's initialisation, augmentation, sampling and dropout. Only ``self.losses`` holds
    trainable parameters (PNSCD's heads); the teacher is not a registered submodule, so the
    state dict of this module is what --resume needs and nothing of it is saved with the student.
    """

    teacher: nn.Module  # set through __dict__: not a submodule

    def __init__(self, student: nn.Module, teacher: nn.Module, dopts: DistillOptions, num_classes: int, channels: int, size: int,
                 n_region_samples: int, device: torch.device | str = "cpu", seed: int = 0,
                 calibration: np.ndarray | None = None) -> None:
        from pncd.runtime import all_gather_varlen

        super().__init__()
        dopts.check()
        d = self.dopts = dopts
        self.__dict__["teacher"] = prepare_teacher(teacher, device)  # frozen, and kept out of state_dict()
        self.pairs = resolve_taps(student, teacher, d.taps)
        names = d.active()
        need_feats = any(get_loss(n).uses_features for n in names)
        self.s_hooks = FeatureTaps(student, [s for s, _ in self.pairs]) if need_feats else None
        self.t_hooks = FeatureTaps(teacher, [t for _, t in self.pairs]) if need_feats else None
        s_ch, t_ch = self._probe_channels(student, channels, size, device)
        # the teacher's forward: eager torch or OpenVINO (--teacher-runtime); same tensors either way, or
        # nearly (openvino-int8, calibrated on ``calibration``: training images)
        self.runner = build_runner(d.teacher_runtime, self.teacher, self.t_hooks, [t for _, t in self.pairs] if need_feats else [],
                                   channels, size, device, calibration=calibration, min_agreement=d.int8_agreement)
        ctx = LossContext(d, num_classes, s_ch, t_ch, n_region_samples, all_gather_varlen)
        with torch.random.fork_rng(devices=[]):  # the heads draw from their own stream (see above)
            torch.manual_seed(HEAD_SEED_OFFSET + seed)
            self.losses = build_losses(ctx, names)
        self.losses.to(device)

    def _probe_channels(self, student: nn.Module, channels: int, size: int, device: torch.device | str) -> tuple[list[int], list[int]]:
        """Channels of every tapped feature, from one forward pass of each network."""
        if self.s_hooks is None or self.t_hooks is None:
            return [0], [0]
        x = torch.zeros(1, channels, size, size, device=device)
        was_training = student.training
        student.eval()
        with torch.inference_mode():
            student(x)
            self.teacher(x)
        student.train(was_training)
        return [self.s_hooks[m].shape[1] for m, _ in self.pairs], [self.t_hooks[m].shape[1] for _, m in self.pairs]

    def teacher_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The teacher's logits and tapped features for a batch (one forward pass, no autograd;
        float32 in the default layout, through ``self.runner``: see :mod:`pncd.distill.teacher_runtime`)."""
        return self.runner(images)

    def forward(self, student: nn.Module, images: torch.Tensor, masks: torch.Tensor, seg_loss: nn.Module,
                kd_scale: float = 1.0, teacher_outputs: tuple[torch.Tensor, list[torch.Tensor]] | None = None,
                ) -> dict[str, torch.Tensor]:
        """``teacher_outputs``: the teacher's (logits, [tapped features]) of ``images`` from
        elsewhere (``--teacher-cache``); None: the teacher runs now."""
        t_logits, t_feats = self.teacher_forward(images) if teacher_outputs is None else teacher_outputs
        s_logits = student(images)
        s_feats = [self.s_hooks[s] for s, _ in self.pairs] if self.s_hooks else []
        parts = seg_loss(s_logits, masks)
        out = {"loss_seg": parts["loss"], "seg_ce": parts["ce"], "seg_dice": parts["dice"]}
        total = parts["loss"]
        batch = DistillBatch(images=images, masks=masks, student_logits=s_logits, teacher_logits=t_logits,
                             student_feats=s_feats, teacher_feats=t_feats)
        for name, loss in self.losses.items():
            value = cast(DistillLoss, loss).batch_loss(batch)
            out[name] = value
            total = total + (kd_scale * self.dopts.weight(name)) * value
        out["loss"] = total
        return out


def count_region_samples(masks: np.ndarray, num_classes: int) -> int:
    """M of PNSCD: the number of (slice, class present) samples in the training set."""
    return int(sum((masks == k).any(axis=(1, 2)).sum() for k in range(num_classes)))


def warmup_scale(step: int, total_steps: int, warmup: float) -> float:
    """Linear warm-up factor of the distillation weights: 0 at step 0, 1 from step
    ``round(warmup * total_steps)`` on (``warmup`` <= 0: always 1). Not in the paper."""
    if warmup <= 0:
        return 1.0
    n = max(1, round(warmup * total_steps))
    return min(1.0, step / n)


class DistillTrainer(Trainer):
    """``Trainer`` whose loss is the PNCD objective; the heads train and resume with the student.

    The distillation weights ramp linearly from 0 to their values over the first
    ``dopts.kd_warmup`` of all steps (``kd_scale`` in the step rows of log.jsonl)."""

    kind = "distill"

    def __init__(self, student: nn.Module, teacher: nn.Module, dopts: DistillOptions, teacher_source: dict, *args: Any, **kw: Any) -> None:
        self.teacher, self.dopts, self.teacher_source = teacher, dopts, teacher_source
        super().__init__(student, *args, **kw)

    def setup(self) -> None:
        s = self.data_spec
        self.pncd = PNCD(self.raw_model, self.teacher, self.dopts, s.num_classes, s.channels, s.size,
                         count_region_samples(self.train_set.masks, s.num_classes), self.device, seed=self.opts.seed,
                         calibration=self.train_set.images)  # read by --teacher-runtime openvino-int8 only
        self.losses, self.pairs = self.pncd.losses, self.pncd.pairs
        self.teacher_cache: TeacherCache | None = None
        if self.dopts.teacher_cache:  # the teacher once, now; the dataset then transforms its maps with each slice
            from pncd.data import SegDataset
            from pncd.distill.cache import BUILD_BATCH, build_cache

            self.teacher_cache = build_cache(self.pncd.runner, self.train_set.images, self.device,
                                             max(self.opts.batch, BUILD_BATCH), show=self.dist.is_main)
            cast(SegDataset, self.loader.dataset).extras = self.teacher_cache

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad] + list(self.losses.parameters())

    def extra_state(self) -> dict[str, nn.Module]:
        return {"losses": self.losses}

    def after_backward(self) -> None:
        if self.dist.enabled:
            for p in self.losses.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.dist.world

    def kd_scale(self) -> float:
        return warmup_scale(self.global_step, self.opts.epochs * self.steps_per_epoch, self.dopts.kd_warmup)

    def term_gradient_norms(self, parts: dict[str, torch.Tensor]) -> dict[str, float]:
        """The norm of each weighted term's gradient on the student (Loss_seg and every active
        distillation loss): one extra backward pass per term on the sampled steps."""
        params = [p for p in self.raw_model.parameters() if p.requires_grad]
        weighted = {"seg": parts["loss_seg"]}
        scale = self.kd_scale()
        for name in self.losses:
            weighted[name] = parts[name] * (scale * self.dopts.weight(name))
        norms: dict[str, float] = {}
        for name, term in weighted.items():
            if not term.requires_grad:
                norms[name] = 0.0
                continue
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            sq = sum(float(g.detach().float().pow(2).sum()) for g in grads if g is not None)
            norms[name] = sq ** 0.5
        return norms

    def step_info(self) -> dict[str, float]:
        return {"kd_scale": self.kd_scale()}

    def compute_loss(self, images: torch.Tensor, masks: torch.Tensor, *extra: Any) -> dict[str, torch.Tensor]:
        # with --teacher-cache the batch carries the teacher's outputs (the dataset's extra maps)
        cached = split_outputs(extra[0]) if extra and self.teacher_cache is not None else None
        return self.pncd(self.model, images, masks, self.seg_loss, kd_scale=self.kd_scale(), teacher_outputs=cached)

    def config_extra(self) -> dict[str, Any]:
        d = self.dopts.record()
        d["taps"] = [list(p) for p in self.pairs]
        d["active"] = self.dopts.active()
        d.update(runtime_record(self.pncd.runner))
        if self.teacher_cache is not None:
            d["teacher_cache_info"] = self.teacher_cache.record()
        return {"distill": d, "teacher": self.teacher_source}


__all__ = ["DEFAULT_WEIGHTS", "MODULES", "PNCD", "DistillOptions", "DistillTrainer", "best_val_dice", "check_teacher_dice",
           "count_region_samples", "fuse_conv_bn", "load_teacher", "prepare_teacher", "resolve_taps", "warmup_scale"]
