"""Positive-Negative Sample Contrastive Distillation (PNSCD, PNCD eq. 8).

Samples are class regions, not whole images. For each image b and class k present (in both
networks' masks at the high tap's size), the region vectors (eq. 5) are projected by a head
``Linear(c, dim)`` per network and L2-normalised: ``g_s(b,k)``, ``g_t(b,k)``.

For a student anchor ``g_s(b,k)``:

- positives: teacher embeddings of the same class k, from this batch (including the same
  image's own teacher region) and from a per-class FIFO memory of past teacher samples;
- negatives: teacher embeddings of the other classes, batch first, then memory from newest to
  oldest (classes interleaved by age), at most N (``n_negatives``).

Two forms of the loss, with ``s = g_s . g_t / tau`` (``form``, CLI ``--pnscd-form``):

``"infonce"`` (the default; a departure from eq. 8), one positive at a time against all the
anchor's negatives, averaged over positives, then over anchors::

    L = -(1/k_p) * sum over positives log( e^s(pos) / (e^s(pos) + sum over negatives e^s(neg)) )

This is the InfoNCE bound that CRD (Tian et al., ICLR 2020) offers beside its NCE loss, with
several positives as in supervised contrastive learning (Khosla et al., NeurIPS 2020), but
with each positive scored against the negatives only, so the loss of a well-separated anchor
goes to 0 rather than to log k_p. Why not eq. 8: the negatives here are not noise samples
but one tight cluster (the other class's regions, hundreds to thousands of near-identical
embeddings), so eq. 8's *sum* of ``-log(1 - h(neg))`` over N negatives makes one confused
anchor pay N times (training logs showed PNSCD spikes near 400 against a typical 1-5) and
its gradient grows with N. In the InfoNCE form the negatives enter through one log-sum-exp:
an anchor's loss is at most ``2/tau + log(1 + N)`` and its gradient with respect to ``s`` is
a difference of two probability vectors, so whatever N is, each anchor's gradient with
respect to its embedding is bounded by ``2/tau``. It needs neither CRD's constant Z nor M
(``n_data`` is ignored).

Memory of the infonce form: the teacher's *region vectors* (before the head), ``memory_per_class``
per class (default 256), refreshed FIFO every training step with this batch's teacher regions,
and projected by the *current* teacher head at every step. The teacher is frozen, so a stored
region vector is exactly what the teacher would produce now: no memory entry is stale, however
small the memory or short the run (the 4,096-slot embedding memory of the crd form keeps
embeddings made by heads thousands of steps old, and in a short run is never refreshed). The
teacher head receives gradient through the memory's projections as well as the batch's.

``"instance"`` (``--pnscd-form instance``): instance discrimination, as CRD transfers knowledge.
Each class region of each image is its own identity: the student anchor ``g_s(b,k)`` has one
positive, the teacher's embedding of the same region ``g_t(b,k)``, and as negatives the teacher
embeddings of every other image's regions of either class (this batch, then the memory of past
teacher region vectors, re-projected by the current head), at most N::

    L = -log( e^s(pos) / (e^s(pos) + sum over negatives e^s(neg)) )

With two classes the class-level forms are solved by the trainable heads alone (the other class
is one tight cluster), so their loss sits near 0 between rare spikes and passes the student
little; the instance form asks the student's embedding to single out its own image's region
among regions of the same class, which only a student that carries the teacher's detail can do.

``"crd"`` (``--pnscd-form crd``; the paper's eq. 8 read as CRD's noise-contrastive estimate),
CRD's noise-contrastive form with ``h = e^s / (e^s + N/M)`` (N = the negatives this anchor
actually used, M = ``n_data``, the number of class-region samples in the training set)::

    L = -(1/k_p) * sum over positives [ log h(pos) + sum over negatives log(1 - h(neg)) ]
      = -(mean over positives of log h(pos)) - sum over negatives of log(1 - h(neg))

computed in log space, ``log h = s - logaddexp(s, log(N/M))`` and
``log(1-h) = log(N/M) - logaddexp(s, log(N/M))``. By default (``normalize="none"``) h has no
normalisation constant Z, so the negative sum starts of the order of N (about N log 2 when
N ~ M) with random heads and falls as classes separate. ``normalize="crd"`` (CLI
``--pnscd-norm crd``) divides e^s by CRD's constant Z (fixed from the first batch), which keeps
the loss of order 1 like the other terms. Its memory holds teacher *embeddings* (detached, as
made by the head at the time), by default ``ceil(N / (K - 1))`` per class.

Both forms: the loss is averaged over anchors. Anchors without a negative (a batch, and memory,
with one class only) add nothing; if no anchor is left the loss is a zero still connected to
the heads and student features. The memory holds teacher samples only (no student memory, the
student side is always the anchor). As in CRD, the teacher head trains.

Memory: registered buffers (they follow ``.to(device)`` and the state dict), updated in training
mode only, AFTER the loss is computed, with this batch's teacher samples. Updates never
synchronise with the host; they write a new memory tensor (out of place, one copy of the
memory) because the loss just computed keeps the old one for its backward pass, so several
forwards before one backward (gradient accumulation) work. For data-parallel training set
``gather_fn`` to a function that concatenates a tensor over ranks (e.g. an ``all_gather``
wrapper): the update then sees every rank's samples in the same order, so all ranks keep
identical memories and the loss on each rank contrasts against the same negatives. The gathered
tensors have a fixed shape (B*K, D) and (B*K,) (absent classes padded with label -1), so an
equal batch size per rank is all ``all_gather`` needs. The heads and memory are dropped after
training.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pncd.distill.base import DistillBatch, DistillLoss, LossContext, register_loss
from pncd.distill.region import class_masks, region_vectors_from_masks


FORMS = ("infonce", "crd", "instance")
MEMORY_PER_CLASS = 256  # default memory of the infonce form
_MASKED = -1.0e4  # a score that exp() turns into 0 (scores lie within +-1/tau)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@register_loss("pnscd")
class PNSCDLoss(DistillLoss):
    """Class-guided contrastive distillation on high-tap region embeddings (form: module docstring).

    ``form="infonce"`` (default) is bounded in N and needs no ``n_data``; ``form="crd"`` is the
    earlier eq. 8 reading (NCE sum over negatives), with ``normalize`` choosing its constant Z.
    """

    # buffers (see __init__)
    memory: torch.Tensor
    mem_ptr: torch.Tensor
    mem_count: torch.Tensor
    log_z: torch.Tensor

    def __init__(
        self,
        s_channels: int,
        t_channels: int,
        num_classes: int,
        *,
        n_data: int | None = None,
        dim: int = 128,
        tau: float = 0.07,
        n_negatives: int = 4096,
        memory_per_class: int | None = None,
        gather_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        normalize: str = "none",
        form: str = "infonce",
    ) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"unknown PNSCD form {form!r}; valid: {', '.join(FORMS)}")
        if normalize not in ("none", "crd"):
            raise ValueError(f"normalize must be 'none' or 'crd', got {normalize!r}")
        self.form, self.normalize = form, normalize
        if num_classes < 2:
            raise ValueError(f"PNSCD needs at least 2 classes, got {num_classes}")
        if form == "crd" and n_data is None:
            raise ValueError("the crd form needs n_data (class-region samples in the training set)")
        if n_data is not None and n_data < 1:
            raise ValueError(f"n_data (class-region samples in the training set) must be positive, got {n_data}")
        if tau <= 0 or n_negatives < 1:
            raise ValueError(f"tau and n_negatives must be positive, got {tau} and {n_negatives}")
        self.num_classes = int(num_classes)
        self.n_data = int(n_data) if n_data is not None else None
        self.tau = float(tau)
        self.n_negatives = int(n_negatives)
        # crd: by default the other classes' memories together can supply N negatives.
        q = memory_per_class or (MEMORY_PER_CLASS if form != "crd" else math.ceil(n_negatives / (num_classes - 1)))
        if q < 1:
            raise ValueError(f"memory_per_class must be positive, got {memory_per_class}")
        self.memory_per_class = int(q)
        self.embed_s = nn.Linear(s_channels, dim)
        self.embed_t = nn.Linear(t_channels, dim)
        # Slot q of each class (the extra one) is scratch: writes that must not land anywhere
        # go there, which keeps the update free of data-dependent shapes (no host sync).
        # infonce and instance store teacher region vectors (re-projected every step), crd embeddings.
        width = t_channels if form != "crd" else dim
        self.register_buffer("memory", torch.zeros(num_classes, q + 1, width))
        self.register_buffer("mem_ptr", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("mem_count", torch.zeros(num_classes, dtype=torch.long))
        self.gather_fn: Callable[[torch.Tensor], torch.Tensor] = gather_fn or _identity
        # CRD's normalisation constant log Z (normalize="crd"), fixed from the first batch.
        self.register_buffer("log_z", torch.full((), float("nan")))

    @classmethod
    def from_context(cls, ctx: LossContext) -> PNSCDLoss:
        """On the last (``high``) tap pair; M = the class-region samples of the training set."""
        o = ctx.options
        return cls(s_channels=ctx.s_channels[-1], t_channels=ctx.t_channels[-1], num_classes=ctx.num_classes, dim=o.embed_dim,
                   tau=o.tau, n_negatives=o.n_negatives, n_data=ctx.n_region_samples, gather_fn=ctx.gather_fn,
                   normalize=o.pnscd_norm, form=o.pnscd_form, memory_per_class=o.pnscd_memory)

    def batch_loss(self, batch: DistillBatch) -> torch.Tensor:
        return self(batch.student_feats[-1], batch.teacher_feats[-1], batch.masks)

    # -- memory -----------------------------------------------------------------------------------------
    def memory_view(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Memory as candidates, newest first, classes interleaved by age.

        Returns embeddings (Q*K, dim), valid (Q*K,) bool and class (Q*K,) long.
        """
        k, q = self.num_classes, self.memory_per_class
        dev = self.memory.device
        age = torch.arange(q, device=dev)[:, None]  # (Q, 1)
        cls = torch.arange(k, device=dev)[None, :].expand(q, k)  # (Q, K): age-major order
        slot = (self.mem_ptr[None, :] - 1 - age) % q  # slot holding the age-th newest entry
        rows = (cls * (q + 1) + slot).reshape(-1)
        emb = self.memory.view(-1, self.memory.shape[-1]).index_select(0, rows)
        valid = (age < self.mem_count[None, :]).reshape(-1)
        return emb, valid, cls.reshape(-1)

    @torch.no_grad()
    def enqueue(self, emb: torch.Tensor, labels: torch.Tensor) -> None:
        """Push rows (n, D) with class labels (n,) (-1 = skip) into the per-class FIFOs (D: the
        teacher's channels for the infonce form, the embedding size for crd)."""
        k, q = self.num_classes, self.memory_per_class
        emb = emb.detach().to(self.memory.dtype)
        valid = labels >= 0
        lab = labels.clamp_min(0).long()
        onehot = F.one_hot(lab, k) * valid[:, None]  # (n, K)
        n_k = onehot.sum(dim=0)  # new entries per class
        rank = (onehot.cumsum(dim=0) - onehot).gather(1, lab[:, None])[:, 0]  # order within class
        keep = valid & (rank >= n_k[lab] - q)  # a class with more than Q new entries keeps its last Q
        slot = torch.where(keep, (self.mem_ptr[lab] + rank) % q, torch.full_like(rank, q))
        # Out of place: the loss just computed saved the old memory for its backward pass.
        flat = self.memory.view(-1, self.memory.shape[-1])
        self.memory = flat.index_copy(0, lab * (q + 1) + slot, emb).view_as(self.memory)
        self.mem_ptr = (self.mem_ptr + n_k) % q
        self.mem_count = (self.mem_count + n_k).clamp_max(q)

    def _masks(self, valid: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positive and negative masks (anchors, batch + memory slots) for anchors of class ``cls``.

        Candidates are this batch's samples, then the memory's raw slots (K * (Q+1), scratch slots
        never valid). The N negatives kept are the first in the order "batch, then memory newest
        first with classes interleaved by age"; a memory entry's place in that order is computed
        in closed form, so the memory is neither copied nor sorted.
        """
        k, q, n = self.num_classes, self.memory_per_class, self.n_negatives
        dev = cls.device
        # Batch part (B*K candidates).
        same_b = cls[:, None] == cls[None, :]
        pos_b = same_b & valid[None]
        neg_b = ~same_b & valid[None]
        neg_b = neg_b & (neg_b.cumsum(dim=1) <= n)
        # Memory part, per anchor class first: (K, K*(Q+1)).
        slot_cls = torch.arange(k, device=dev).repeat_interleave(q + 1)
        slot = torch.arange(q + 1, device=dev).repeat(k)
        age = (self.mem_ptr[slot_cls] - 1 - slot) % q
        mem_valid = (slot < q) & (age < self.mem_count[slot_cls])
        # Entries of class c' that come before (age a, class c) in age-major order:
        # min(count[c'], a + [c' < c]); summed over the classes c' other than the anchor's.
        before = torch.minimum(
            self.mem_count[:, None], age[None, :] + (torch.arange(k, device=dev)[:, None] < slot_cls[None, :])
        )  # (K c', slots)
        rank = before.sum(dim=0, keepdim=True) - before  # (K anchor class, slots)
        other = torch.arange(k, device=dev)[:, None] != slot_cls[None, :]
        n_valid = torch.zeros(k, dtype=torch.long, device=dev).scatter_add_(0, cls, valid.long())
        budget = n - (n_valid.sum() - n_valid)  # what the batch's negatives leave for the memory
        neg_m = mem_valid[None] & other & (rank < budget[:, None])
        pos_m = mem_valid[None] & ~other
        pos = torch.cat([pos_b, pos_m[cls]], dim=1)
        neg = torch.cat([neg_b, neg_m[cls]], dim=1)
        return pos, neg

    # -- loss -------------------------------------------------------------------------------------------
    def _log_z(self, s: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
        """CRD's constant: Z = mean(e^s) * M over the first batch's scored pairs, then kept.

        With it, e^s / Z averages 1/M, so h of a typical negative is about 1/(N+1) and the
        negative sum is of order 1 instead of order N.
        """
        if torch.isnan(self.log_z) and bool(used.any()):
            s_used = s[used]
            assert self.n_data is not None  # the crd form requires it (__init__)
            self.log_z.fill_(float(torch.logsumexp(s_used, 0) - math.log(s_used.numel()) + math.log(self.n_data)))
        return torch.nan_to_num(self.log_z, nan=0.0)

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss for high-tap features (B, Cs, h, w), (B, Ct, h', w') and labels (B, H, W)."""
        k = self.num_classes
        if student_feat.ndim != 4 or teacher_feat.ndim != 4 or labels.ndim != 3:
            raise ValueError(
                f"expected features (B, C, h, w) and labels (B, H, W), got {tuple(student_feat.shape)}, "
                f"{tuple(teacher_feat.shape)} and {tuple(labels.shape)}"
            )
        if not student_feat.shape[0] == teacher_feat.shape[0] == labels.shape[0]:
            raise ValueError(
                f"batch sizes differ: {student_feat.shape[0]}, {teacher_feat.shape[0]}, {labels.shape[0]}"
            )
        if student_feat.shape[1] != self.embed_s.in_features or teacher_feat.shape[1] != self.embed_t.in_features:
            raise ValueError(
                f"PNSCD heads expect {self.embed_s.in_features} student and {self.embed_t.in_features} "
                f"teacher channels, got {student_feat.shape[1]} and {teacher_feat.shape[1]}"
            )
        with torch.autocast(device_type=labels.device.type, enabled=False):
            masks_s = class_masks(labels, student_feat.shape[-2:], k)
            same_size = teacher_feat.shape[-2:] == student_feat.shape[-2:]
            masks_t = masks_s if same_size else class_masks(labels, teacher_feat.shape[-2:], k)
            vs, ps = region_vectors_from_masks(student_feat, masks_s)
            vt, pt = region_vectors_from_masks(teacher_feat.detach(), masks_t)
            b = vs.shape[0]
            valid = (ps & pt).reshape(-1)  # (B*K,), sample order: image-major, then class
            cls = torch.arange(k, device=labels.device).repeat(b)
            g_s = F.normalize(self.embed_s(vs.reshape(b * k, -1)), dim=1)
            g_t = F.normalize(self.embed_t(vt.reshape(b * k, -1)), dim=1)

            pos, neg = self._masks(valid, cls)
            mem = self.memory.view(-1, self.memory.shape[-1])  # raw ring buffers, no copy
            if self.form == "instance":
                loss = self._instance(g_s, g_t, mem, valid, b)
            elif self.form == "infonce":
                loss = self._infonce(g_s, g_t, mem, pos, neg, valid)
            else:
                loss = self._crd(g_s, g_t, mem, pos, neg, valid)

        if self.training:
            mem_rows = vt.reshape(b * k, -1) if self.form != "crd" else g_t.detach()
            self.enqueue(self.gather_fn(mem_rows * valid[:, None]), self.gather_fn(torch.where(valid, cls, -1)))
        return loss

    def _infonce(self, g_s: torch.Tensor, g_t: torch.Tensor, mem: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
                 valid: torch.Tensor) -> torch.Tensor:
        """Each positive against the anchor's negatives (one log-sum-exp); memory re-projected."""
        mem_emb = F.normalize(self.embed_t(mem), dim=1)  # the current head; scratch slots are masked out
        s = torch.cat([g_s @ g_t.t(), g_s @ mem_emb.t()], dim=1) / self.tau  # (B*K, candidates)
        n_pos, n_neg = pos.sum(dim=1), neg.sum(dim=1)
        neg_lse = torch.logsumexp(s.masked_fill(~neg, _MASKED), dim=1, keepdim=True)
        log_p = s - torch.logaddexp(s, neg_lse)
        per_anchor = -torch.where(pos, log_p, torch.zeros_like(s)).sum(dim=1) / n_pos.clamp_min(1)
        use = valid & (n_pos > 0) & (n_neg > 0)
        return torch.where(use, per_anchor, torch.zeros_like(per_anchor)).sum() / use.sum().clamp_min(1)

    def _instance(self, g_s: torch.Tensor, g_t: torch.Tensor, mem: torch.Tensor, valid: torch.Tensor,
                  b: int) -> torch.Tensor:
        """Each region against its own teacher region (positive) and every other image's regions
        (negatives: this batch, then the memory, at most N); memory re-projected."""
        k, q = self.num_classes, self.memory_per_class
        dev = g_s.device
        mem_emb = F.normalize(self.embed_t(mem), dim=1)
        s = torch.cat([g_s @ g_t.t(), g_s @ mem_emb.t()], dim=1) / self.tau  # (B*K, B*K + K*(Q+1))
        image = torch.arange(b, device=dev).repeat_interleave(k)
        neg_b = (image[:, None] != image[None, :]) & valid[None]
        slot_cls = torch.arange(k, device=dev).repeat_interleave(q + 1)
        slot = torch.arange(q + 1, device=dev).repeat(k)
        age = (self.mem_ptr[slot_cls] - 1 - slot) % q
        mem_valid = (slot < q) & (age < self.mem_count[slot_cls])
        neg = torch.cat([neg_b, mem_valid[None].expand(len(valid), -1)], dim=1)
        neg = neg & (neg.cumsum(dim=1) <= self.n_negatives)
        pos_score = s[:, : b * k].diagonal()
        neg_lse = torch.logsumexp(s.masked_fill(~neg, _MASKED), dim=1)
        per_anchor = torch.logaddexp(pos_score, neg_lse) - pos_score
        use = valid & neg.any(dim=1)
        return torch.where(use, per_anchor, torch.zeros_like(per_anchor)).sum() / use.sum().clamp_min(1)

    def _crd(self, g_s: torch.Tensor, g_t: torch.Tensor, mem: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
             valid: torch.Tensor) -> torch.Tensor:
        """Eq. 8 as CRD's NCE loss, summed over negatives (memory of constant embeddings)."""
        # Scores against the batch and the (constant) memory separately: no gradient is
        # computed for the memory's thousands of rows.
        s = torch.cat([g_s @ g_t.t(), g_s @ mem.t()], dim=1) / self.tau  # (B*K, candidates)
        if self.normalize == "crd":
            s = s - self._log_z(s.detach(), pos | neg)
        n_pos = pos.sum(dim=1)
        n_neg = neg.sum(dim=1)
        assert self.n_data is not None  # the crd form requires it (__init__)
        log_nm = torch.log(n_neg.clamp_min(1).float() / self.n_data)[:, None]
        lse = torch.logaddexp(s, log_nm)
        zero = torch.zeros_like(s)
        pos_term = torch.where(pos, s - lse, zero).sum(dim=1) / n_pos.clamp_min(1)
        neg_term = torch.where(neg, log_nm - lse, zero).sum(dim=1)
        use = valid & (n_pos > 0) & (n_neg > 0)
        per_anchor = -(pos_term + neg_term)
        return torch.where(use, per_anchor, torch.zeros_like(per_anchor)).sum() / use.sum().clamp_min(1)
