"""Tests for PNSCDLoss: class-guided contrastive distillation with a per-class memory.

The reference below recomputes both forms with explicit loops, in float64, from the documented
rules (positives = same class in batch and memory; negatives = other classes, batch first, then
memory newest first with classes interleaved by age, at most N), with its own deque-based
memory. crd: h = e^s / (e^s + N/M), the memory keeps embeddings. infonce: each positive against
the log-sum-exp of the negatives, the memory keeps teacher region vectors that the current head
projects.
"""

from __future__ import annotations

import math
from collections import deque

import pytest
import torch

from pncd.distill.pnscd import PNSCDLoss


def _region_vectors_loop(feat: torch.Tensor, labels: torch.Tensor, k: int) -> list[list[torch.Tensor | None]]:
    """Masked means; labels are given at twice the feature size, nearest = every other pixel."""
    step = labels.shape[-1] // feat.shape[-1]
    small = labels[:, ::step, ::step]
    out = []
    for b in range(feat.shape[0]):
        row = []
        for c in range(k):
            m = small[b] == c
            row.append(feat[b][:, m].double().mean(dim=1) if m.any() else None)
        out.append(row)
    return out


class _Reference:
    def __init__(self, mod: PNSCDLoss) -> None:
        self.mod = mod
        self.mem = [deque(maxlen=mod.memory_per_class) for _ in range(mod.num_classes)]
        self.infonce = mod.form == "infonce"

    def embed(self, head: torch.nn.Linear, v: torch.Tensor) -> torch.Tensor:
        g = v @ head.weight.double().t() + head.bias.double()
        return g / g.norm()

    @torch.no_grad()
    def step(self, fs: torch.Tensor, ft: torch.Tensor, labels: torch.Tensor) -> float:
        m, k = self.mod, self.mod.num_classes
        rs, rt = _region_vectors_loop(fs, labels, k), _region_vectors_loop(ft, labels, k)
        anchors, batch, raw = [], [], []
        for b in range(fs.shape[0]):
            for c in range(k):
                if rs[b][c] is not None and rt[b][c] is not None:
                    anchors.append((c, self.embed(m.embed_s, rs[b][c])))
                    batch.append((c, self.embed(m.embed_t, rt[b][c])))
                    raw.append((c, rt[b][c]))
        memory = []
        for age in range(m.memory_per_class):
            for c in range(k):
                if len(self.mem[c]) > age:
                    row = self.mem[c][-1 - age]
                    memory.append((c, self.embed(m.embed_t, row) if self.infonce else row))
        cands = batch + memory
        total, used = 0.0, 0
        for c, gs in anchors:
            pos = [float(gs @ g) / m.tau for cc, g in cands if cc == c]
            neg = [float(gs @ g) / m.tau for cc, g in cands if cc != c][: m.n_negatives]
            if not neg:
                continue
            used += 1
            if self.infonce:
                total += sum(math.log(1 + sum(math.exp(n - p) for n in neg)) for p in pos) / len(pos)
                continue
            nm = len(neg) / m.n_data
            h = lambda s: math.exp(s) / (math.exp(s) + nm)  # noqa: E731
            neg_sum = sum(math.log(1 - h(s)) for s in neg)
            total += -sum(math.log(h(s)) + neg_sum for s in pos) / len(pos)
        for c, g in raw if self.infonce else batch:
            self.mem[c].append(g)
        return total / max(used, 1)


def _labels(b: int, size: int, lesion: list[bool], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(b, size, size, dtype=torch.long)
    for i, has in enumerate(lesion):
        if has:
            y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
            labels[i, y : y + size // 2, x : x + size // 2] = 1
    return labels


@pytest.mark.parametrize("form", ["infonce", "crd"])
@pytest.mark.parametrize("n_neg,q", [(64, 64), (3, 2)])
def test_matches_loop_reference_over_steps(n_neg: int, q: int, form: str):
    # (64, 64): no truncation; (3, 2): at most 3 negatives and a 2-slot memory that wraps around.
    torch.manual_seed(0)
    mod = PNSCDLoss(6, 10, 2, n_data=50, dim=8, tau=0.5, n_negatives=n_neg, memory_per_class=q, form=form)
    ref = _Reference(mod)
    for step, lesion in enumerate([[True, False, True], [False, False, True], [True, True, True], [False] * 3]):
        fs, ft = torch.randn(3, 6, 4, 4), torch.randn(3, 10, 4, 4)
        labels = _labels(3, 8, lesion, seed=step)
        got = mod(fs, ft, labels).item()
        assert got == pytest.approx(ref.step(fs, ft, labels), rel=1e-4, abs=1e-5), f"step {step}"


@pytest.mark.parametrize("form", ["infonce", "crd"])
def test_three_classes_match_loop_reference(form: str):
    torch.manual_seed(1)
    mod = PNSCDLoss(4, 4, 3, n_data=20, dim=6, tau=0.2, n_negatives=5, memory_per_class=3, form=form)
    ref = _Reference(mod)
    for step in range(3):
        fs, ft = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
        labels = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(step))
        assert mod(fs, ft, labels).item() == pytest.approx(ref.step(fs, ft, labels), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("form", ["infonce", "crd"])
def test_gradients_reach_student_and_both_heads_not_teacher(form: str):
    torch.manual_seed(2)
    mod = PNSCDLoss(6, 10, 2, n_data=100, dim=16, form=form)
    fs = torch.randn(2, 6, 4, 4, requires_grad=True)
    ft = torch.randn(2, 10, 4, 4, requires_grad=True)
    mod(fs, ft, _labels(2, 8, [True, True], seed=0)).backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert ft.grad is None
    for head in (mod.embed_s, mod.embed_t):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_lesion_free_first_batch_is_zero_and_fills_memory():
    mod = PNSCDLoss(4, 4, 2, n_data=10, dim=8, memory_per_class=8)
    fs = torch.randn(3, 4, 4, 4, requires_grad=True)
    out = mod(fs, torch.randn(3, 4, 4, 4), torch.zeros(3, 8, 8, dtype=torch.long))
    assert out.item() == 0.0  # no negatives anywhere
    out.backward()
    assert torch.isfinite(fs.grad).all()
    assert mod.mem_count.tolist() == [3, 0]
    # The next batch, lesion only, finds its negatives in the memory.
    lesion = torch.ones(1, 8, 8, dtype=torch.long)
    out2 = mod(torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4), lesion)
    assert torch.isfinite(out2) and out2.item() != 0.0


def test_memory_fifo_order_and_wraparound():
    mod = PNSCDLoss(2, 3, 2, dim=3, memory_per_class=3)  # infonce: rows of the teacher's 3 channels
    emb = torch.arange(5, dtype=torch.float32)[:, None].expand(5, 3)
    mod.enqueue(emb, torch.tensor([0, 0, -1, 0, 0]))  # four class-0 entries 0, 1, 3, 4 into 3 slots
    mod.enqueue(torch.full((1, 3), 9.0), torch.tensor([1]))
    mod.enqueue(torch.full((1, 3), 7.0), torch.tensor([0]))
    view, valid, cls = mod.memory_view()
    # Age-major, classes interleaved: (age0: c0, c1), (age1: c0, c1), (age2: c0, c1).
    assert cls.tolist() == [0, 1, 0, 1, 0, 1]
    assert valid.tolist() == [True, True, True, False, True, False]
    assert view[valid][:, 0].tolist() == [7.0, 9.0, 4.0, 3.0]
    assert mod.mem_count.tolist() == [3, 1]


def test_eval_mode_does_not_update_memory_and_buffers_are_registered():
    mod = PNSCDLoss(4, 5, 2, dim=8).eval()
    mod(torch.randn(2, 4, 4, 4), torch.randn(2, 5, 4, 4), _labels(2, 8, [True, False], seed=0))
    assert mod.mem_count.sum().item() == 0
    names = dict(mod.named_buffers())
    assert {"memory", "mem_ptr", "mem_count"} <= set(names) and "memory" in mod.state_dict()
    # infonce (default): 256 teacher region vectors (5 channels) per class, plus a scratch slot
    assert mod.memory_per_class == 256 and tuple(mod.memory.shape) == (2, 257, 5)
    crd = PNSCDLoss(4, 5, 2, n_data=10, dim=8, form="crd")
    assert crd.memory_per_class == 4096  # crd: the other class's memory can supply N = 4096
    assert tuple(crd.memory.shape) == (2, 4097, 8)


@pytest.mark.parametrize("form,width", [("infonce", 5), ("crd", 8)])
def test_gather_fn_receives_fixed_shapes_and_feeds_the_memory(form: str, width: int):
    calls = []

    def gather(x: torch.Tensor) -> torch.Tensor:  # stands in for an all_gather over two ranks
        calls.append(tuple(x.shape))
        return torch.cat([x, x])

    mod = PNSCDLoss(4, 5, 2, n_data=10, dim=8, memory_per_class=16, gather_fn=gather, form=form)
    mod(torch.randn(3, 4, 4, 4), torch.randn(3, 5, 4, 4), _labels(3, 8, [True, False, True], seed=1))
    assert calls == [(6, width), (6,)]  # B*K rows and labels, absent classes padded
    assert mod.mem_count.tolist() == [6, 4]  # every present region twice


def test_batch_size_one():
    mod = PNSCDLoss(4, 4, 2, n_data=10, dim=8)
    out = mod(torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4), _labels(1, 8, [True], seed=2))
    assert torch.isfinite(out) and out.item() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features(dtype: torch.dtype):
    torch.manual_seed(3)
    fs32, ft32 = 5e3 * torch.randn(2, 4, 4, 4), 5e3 * torch.randn(2, 4, 4, 4)
    labels = _labels(2, 8, [True, True], seed=3)
    mod = PNSCDLoss(4, 4, 2, n_data=10, dim=8)
    out = mod.eval()(fs32.to(dtype), ft32.to(dtype), labels)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    ref = mod(fs32.to(dtype).float(), ft32.to(dtype).float(), labels)
    torch.testing.assert_close(out, ref)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_data"):
        PNSCDLoss(4, 4, 2, n_data=0)
    with pytest.raises(ValueError, match="n_data"):
        PNSCDLoss(4, 4, 2, form="crd")  # crd needs M
    with pytest.raises(ValueError, match="infonce"):
        PNSCDLoss(4, 4, 2, form="nce")
    mod = PNSCDLoss(4, 4, 2, n_data=5)
    with pytest.raises(ValueError, match="channels"):
        mod(torch.randn(1, 3, 4, 4), torch.randn(1, 4, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long))


def test_two_forwards_then_one_backward():
    # Gradient accumulation over two batches before backward: the memory update after the first
    # forward must not invalidate what the first loss saved for its backward pass.
    torch.manual_seed(4)
    mod = PNSCDLoss(4, 4, 2, n_data=10, dim=8, memory_per_class=8)
    fs = torch.randn(2, 4, 4, 4, requires_grad=True)
    labels = _labels(2, 8, [True, False], seed=4)
    total = mod(fs, torch.randn(2, 4, 4, 4), labels) + mod(fs, torch.randn(2, 4, 4, 4), labels)
    total.backward()
    assert torch.isfinite(fs.grad).all() and fs.grad.abs().sum() > 0


def test_training_the_student_and_heads_lowers_the_loss():
    torch.manual_seed(5)
    labels = _labels(4, 8, [True, True, False, True], seed=5)
    ft = torch.randn(4, 6, 4, 4) + 2.0 * labels[:, None, ::2, ::2]  # teacher separates the classes
    fs = torch.nn.Parameter(torch.randn(4, 5, 4, 4))
    mod = PNSCDLoss(5, 6, 2, n_data=20, dim=8, n_negatives=16, memory_per_class=16)
    opt = torch.optim.Adam([fs, *mod.parameters()], lr=0.05)
    losses = []
    for _ in range(30):
        loss = mod(fs, ft, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[2]


def test_crd_normalisation_keeps_loss_of_order_one():
    """normalize="crd": e^s/Z averages 1/M on the first batch, so the negative sum is O(1), not O(N)."""
    import torch

    from pncd.distill.pnscd import PNSCDLoss

    torch.manual_seed(0)
    labels = torch.zeros(4, 16, 16, dtype=torch.long)
    labels[:, 4:10, 4:10] = 1
    feats_s, feats_t = torch.randn(4, 8, 8, 8), torch.randn(4, 6, 8, 8)
    raw = PNSCDLoss(8, 6, 2, n_data=500, n_negatives=256, form="crd")
    crd = PNSCDLoss(8, 6, 2, n_data=500, n_negatives=256, normalize="crd", form="crd")
    crd.load_state_dict({k: v for k, v in raw.state_dict().items()}, strict=False)
    raw.train(), crd.train()
    for _ in range(80):  # fill the memory so N reaches 256
        lr, lc = raw(feats_s, feats_t, labels), crd(feats_s, feats_t, labels)
    assert torch.isfinite(crd.log_z)
    assert lc.item() < 20 < lr.item()


def test_infonce_memory_follows_the_current_teacher_head():
    """The infonce memory keeps teacher region vectors and projects them with the head of the
    moment: after the head changes, the loss still equals the loop reference, which embeds every
    memory entry with the current head (a memory of old embeddings would not)."""
    torch.manual_seed(6)
    mod = PNSCDLoss(6, 10, 2, dim=8, tau=0.5, memory_per_class=8)
    ref = _Reference(mod)
    for step, lesion in enumerate([[True, False, True], [False, True, True], [True, True, False]]):
        fs, ft = torch.randn(3, 6, 4, 4), torch.randn(3, 10, 4, 4)
        labels = _labels(3, 8, lesion, seed=10 + step)
        assert mod(fs, ft, labels).item() == pytest.approx(ref.step(fs, ft, labels), rel=1e-4, abs=1e-5), f"step {step}"
        with torch.no_grad():  # stands in for an optimizer step on the teacher head
            mod.embed_t.weight.add_(0.5 * torch.randn_like(mod.embed_t.weight))


def _confused_anchor(form: str, n_neg: int) -> tuple[float, float]:
    """One lesion anchor whose student embedding equals the other class's, against a memory of
    ``n_neg`` identical background entries: (loss, gradient norm on the student feature)."""
    torch.manual_seed(7)
    mod = PNSCDLoss(4, 4, 2, n_data=100, dim=4, tau=0.07, n_negatives=n_neg, memory_per_class=n_neg, form=form)
    with torch.no_grad():
        for head in (mod.embed_s, mod.embed_t):
            head.weight.copy_(torch.eye(4))
            head.bias.zero_()
    bg, fg = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 1.0, 0, 0])
    mod.enqueue(bg.expand(n_neg, 4), torch.zeros(n_neg, dtype=torch.long))  # region vectors = embeddings here
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :4] = 1
    ft = torch.zeros(1, 4, 4, 4)
    ft[0, :, :2] = fg[:, None, None]  # teacher: lesion rows hold fg, background rows bg
    ft[0, :, 2:] = bg[:, None, None]
    fs = torch.zeros(1, 4, 4, 4)
    fs[0, :, :2] = (bg + 0.3 * torch.tensor([0, 0, 1.0, 0]))[:, None, None]  # student: lesion close to background
    fs[0, :, 2:] = bg[:, None, None]
    fs.requires_grad_(True)
    loss = mod.eval()(fs, ft, labels)
    loss.backward()
    return loss.item(), fs.grad.norm().item()


def test_infonce_bounds_a_confused_anchor_where_crd_grows_with_n():
    """The failure of eq. 8's sum that docs/method.md describes: one confused anchor against thousands
    of near-identical negatives.
    crd's summed negative term grows linearly with N; infonce's stays below 2/tau + log(1 + N)."""
    crd_small, crd_big = _confused_anchor("crd", 256)[0], _confused_anchor("crd", 4096)[0]
    assert crd_big > 8 * crd_small > 100  # ~N: thousands for N = 4096
    tau = 0.07
    for n in (256, 4096):
        loss, grad = _confused_anchor("infonce", n)
        assert loss < 2 / tau + math.log(1 + n + 2)  # + the batch's own background regions
        assert loss < crd_big / 100
    g_small, g_big = _confused_anchor("infonce", 256)[1], _confused_anchor("infonce", 4096)[1]
    assert g_big < 1.1 * g_small < 2 / tau  # the gradient does not grow with N
    assert _confused_anchor("crd", 4096)[1] > 8 * _confused_anchor("crd", 256)[1]  # crd's does
