"""``pncd distill --teacher-cache`` (pncd.distill.cache): the teacher's outputs cached once per
training slice, transformed with each augmented sample.

Checked here: an un-augmented sample's cached outputs are the live teacher's (to float16
rounding); a flipped sample's are the teacher's on the flipped image for a teacher that commutes
with flips (and the flipped outputs for any teacher); maps at lower resolution rotate about their
own centre; rotated-in corners take the map's corner value; the same seed draws the same samples
with and without the cache; the size check refuses in one line; and through the command line a
cached run records the cache, pairs step by step with a live run of the same seed, resumes to the
weights of an uninterrupted run, and runs under torchrun.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tests.helpers import KILL_AFTER_STEP, run_cli

F16 = dict(rtol=2e-3, atol=2e-3)  # float16 keeps 11 significant bits: ~5e-4 relative


def _symmetric(conv: nn.Conv2d) -> nn.Conv2d:
    """Make each kernel equal to its left-right and up-down mirror images (then the convolution,
    zero-padded symmetrically, commutes with both flips)."""
    w = conv.weight.data
    conv.weight.data = (w + w.flip(-1) + w.flip(-2) + w.flip(-1, -2)) / 4
    return conv


class FlipSymmetricTeacher(nn.Module):
    """A teacher that commutes with horizontal and vertical flips: mirror-symmetric 3x3 kernels,
    2x2 average pooling on even sizes and nearest upsampling. Taps: ``stem`` (full resolution)
    and ``deep`` (half)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(_symmetric(nn.Conv2d(1, 6, 3, padding=1)), nn.ReLU())
        self.deep = nn.Sequential(nn.AvgPool2d(2), _symmetric(nn.Conv2d(6, 8, 3, padding=1)), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(8, 2, 1), nn.Upsample(scale_factor=2, mode="nearest"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.deep(self.stem(x)))


class PointwiseTeacher(nn.Module):
    """1x1 convolutions only (commutes with any rotation but for interpolation), and a tap
    ``pool`` at a quarter of the resolution."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 1), nn.Tanh())
        self.pool = nn.AvgPool2d(4)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        self.pool(h)  # tapped only
        return self.head(h)


def _runner(net: nn.Module, names: list[str]):
    from pncd.distill.teacher_runtime import TorchTeacher
    from pncd.models import FeatureTaps

    net.eval()
    return TorchTeacher(net, FeatureTaps(net, names), names)


def _slices(n: int = 6, size: int = 16, smooth: bool = False):
    from pncd.data.spec import SliceSet

    g = torch.Generator().manual_seed(1)
    if smooth:  # an off-centre blob: rotation moves it, bilinear interpolation barely blurs it
        yy, xx = torch.meshgrid(torch.arange(size) - 0.3 * size, torch.arange(size) - 0.6 * size, indexing="ij")
        images = torch.exp(-(yy**2 + xx**2) / (0.08 * size**2))[None, None].repeat(n, 1, 1, 1) * torch.rand(n, 1, 1, 1, generator=g)
    else:
        images = torch.randn(n, 1, size, size, generator=g)
    masks = (images[:, 0] > images[:, 0].mean()).long()
    return SliceSet(images.numpy(), masks.numpy(), [f"c{i}" for i in range(n)], list(range(n)), [""] * n)


def _flips(got: torch.Tensor, orig: torch.Tensor) -> tuple[int, ...]:
    """The flip (dims) that turns ``orig`` into ``got``."""
    for dims in ((), (-1,), (-2,), (-2, -1)):
        if torch.allclose(orig.flip(dims) if dims else orig, got, atol=1e-5):
            return dims
    raise AssertionError("the sample is no flip of its slice")


def test_unaugmented_cache_is_the_live_teacher():
    from pncd.data import SegDataset
    from pncd.distill.cache import build_cache

    ss = _slices(n=5)
    runner = _runner(FlipSymmetricTeacher(), ["stem", "deep"])
    cache = build_cache(runner, ss.images, batch=2, show=False)  # 1 + 2 + 2 slices: every batch path
    assert len(cache) == 5 and cache.logits.dtype == torch.float16
    assert cache.nbytes == 5 * (2 * 16 * 16 + 6 * 16 * 16 + 8 * 8 * 8) * 2
    ds = SegDataset(ss, augment=False, extras=cache)
    for i in range(len(ss)):
        image, mask, maps = ds[i]
        logits, feats = runner(image[None])
        assert [m.shape for m in maps] == [logits.shape[1:], *(f.shape[1:] for f in feats)]
        for got, want in zip(maps, [logits, *feats]):
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, want[0], **F16)


def test_flipped_sample_gets_the_teachers_outputs_on_the_flipped_image():
    from pncd.data import SegDataset
    from pncd.distill.cache import build_cache
    from tests.distill.user_teacher import build

    ss = _slices(n=8)
    symmetric = _runner(FlipSymmetricTeacher(), ["stem", "deep"])
    plain = _runner(build(), ["stem", "deep"])  # strided convolutions: flips do not commute with it
    seen = set()
    for runner, equivariant in ((symmetric, True), (plain, False)):
        ds = SegDataset(ss, augment=True, rotation=0.0, extras=build_cache(runner, ss.images, show=False))
        for i in range(len(ss)):
            torch.manual_seed(i)
            image, mask, maps = ds[i]
            orig = torch.from_numpy(ss.images[i])
            dims = _flips(image, orig)
            seen.add(dims)
            assert torch.equal(mask, torch.from_numpy(ss.masks[i]).flip(dims) if dims else torch.from_numpy(ss.masks[i]))
            logits, feats = runner((image if equivariant else orig)[None])
            for got, want in zip(maps, [logits[0], *(f[0] for f in feats)]):
                torch.testing.assert_close(got, want if equivariant or not dims else want.flip(dims), **F16)
            if not equivariant and dims:  # for this teacher the cache is an approximation, not the truth
                assert not torch.allclose(maps[1], runner(image[None])[1][0][0], **F16)
    assert len(seen) >= 3  # the seeds drew several of the four flips


def test_smaller_maps_rotate_about_their_own_centre():
    """With a teacher that commutes with rotation but for interpolation, the rotated cache is
    close to the teacher's outputs on the rotated image, its quarter-resolution tap too (about its
    own centre); rotated about the top-left corner instead, the tap misses them by far more."""
    import torchvision.transforms.v2.functional as F

    from pncd.data import SegDataset
    from pncd.distill.cache import build_cache

    ss = _slices(n=4, size=32, smooth=True)
    runner = _runner(PointwiseTeacher(), ["pool"])
    cache = build_cache(runner, ss.images, show=False)
    ds = SegDataset(ss, augment=True, rotation=15.0, extras=cache)
    for i in range(len(ss)):
        torch.manual_seed(100 + i)
        image, _, (logits, pool) = ds[i]
        want_logits, (want_pool,) = runner(image[None])
        spread = float((want_pool.amax((2, 3)) - want_pool.amin((2, 3))).max())  # the blob's contrast in the tap
        err = float((pool - want_pool[0]).abs().max())
        assert err < 0.15 * spread
        assert float((logits - want_logits[0]).abs().max()) < 0.01 * float((want_logits.amax((2, 3)) - want_logits.amin((2, 3))).max())
        dims, angle = _geometry(image, torch.from_numpy(ss.images[i]))
        assert angle != 0.0
        small = cache[i][1].float()
        small = small.flip(dims) if dims else small
        wrong = F.rotate(small - small[:, :1, :1], angle, F.InterpolationMode.BILINEAR, center=[0, 0]) + small[:, :1, :1]
        assert float((wrong - want_pool[0]).abs().max()) > 3 * err


def _geometry(image: torch.Tensor, orig: torch.Tensor) -> tuple[tuple[int, ...], float]:
    """The flip (dims) and rotation (degrees, a half-degree grid) that best turn ``orig`` into ``image``."""
    import torchvision.transforms.v2.functional as F

    low = orig.min()
    best = min((float((F.rotate((orig.flip(d) if d else orig) - low, float(a), F.InterpolationMode.BILINEAR) + low - image)
                      .abs().mean()), d, float(a))
               for d in ((), (-1,), (-2,), (-2, -1)) for a in np.arange(-15, 15.01, 0.5))
    return best[1], best[2]


def test_the_probe_records_what_v2_applied_and_maps_follow_it():
    """The probe's ops, replayed with torchvision's own functionals, give the dataset's image;
    ``follow`` applies those ops as torchvision would to the map (shifted by its corner value)."""
    import torchvision.transforms.v2.functional as F
    from torchvision import tv_tensors

    from pncd.data.dataset import GeometryProbe, SegDataset, follow

    transform = SegDataset(_slices(n=1), augment=True, rotation=15.0).transform
    g = torch.Generator().manual_seed(5)
    kinds = set()
    for seed in range(12):
        image = torch.randn(1, 16, 16, generator=g)
        torch.manual_seed(seed)
        got, probe = transform(tv_tensors.Image(image), GeometryProbe.new())
        replay = image
        for op, angle in probe.ops:
            replay = {"hflip": F.horizontal_flip, "vflip": F.vertical_flip}[op](replay) if op != "rotate" else \
                F.rotate(tv_tensors.Image(replay), angle, F.InterpolationMode.BILINEAR, fill=[0.0]).as_subclass(torch.Tensor)
        torch.testing.assert_close(got.as_subclass(torch.Tensor), replay)
        assert [op for op, _ in probe.ops][-1] == "rotate" and abs(probe.ops[-1][1]) <= 15
        kinds.add(tuple(op for op, _ in probe.ops))
        for m in (torch.randn(5, 8, 8, generator=g), torch.randn(3, 16, 12, generator=g).half()):
            corner = m[:, :1, :1].float()
            ref = m.float() - corner
            for op, angle in probe.ops:
                ref = {"hflip": F.horizontal_flip, "vflip": F.vertical_flip}[op](ref) if op != "rotate" else \
                    F.rotate(tv_tensors.Image(ref), angle, F.InterpolationMode.BILINEAR, fill=[0.0]).as_subclass(torch.Tensor)
            torch.testing.assert_close(follow(m, probe.ops), ref + corner, rtol=1e-4, atol=1e-4)
    assert len(kinds) >= 3  # flips on and off were drawn


def test_rotated_in_corners_take_the_maps_corner_value():
    from pncd.data import SegDataset

    ss = _slices(n=3, size=16)
    const = [(torch.full((2, 16, 16), 5.0, dtype=torch.float16), torch.full((3, 4, 4), -2.0, dtype=torch.float16))] * 3
    ds = SegDataset(ss, augment=True, rotation=15.0, extras=const)
    for i in range(3):
        torch.manual_seed(i)
        image, _, (a, b) = ds[i]
        orig = torch.from_numpy(ss.images[i])
        assert not any(torch.allclose(image, orig.flip(d) if d else orig, atol=1e-3) for d in ((), (-1,), (-2,), (-2, -1)))
        torch.testing.assert_close(a, torch.full_like(a, 5.0))  # zeros there without the shift
        torch.testing.assert_close(b, torch.full_like(b, -2.0))
    assert float(const[0][0].min()) == 5.0  # the cache itself is left as it was


def test_same_seed_same_samples_with_and_without_the_cache():
    from pncd.data import SegDataset
    from pncd.distill.cache import build_cache

    ss = _slices(n=6)
    cache = build_cache(_runner(FlipSymmetricTeacher(), ["stem", "deep"]), ss.images, show=False)
    live, cached = SegDataset(ss, augment=True, seed=3), SegDataset(ss, augment=True, seed=3, extras=cache)
    loaders = [torch.utils.data.DataLoader(d, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(0))
               for d in (live, cached)]
    runs = []
    for loader in loaders:
        torch.manual_seed(11)
        runs.append([b for _ in range(2) for b in loader])
        runs[-1].append(torch.get_rng_state())
    (*a, state_a), (*b, state_b) = runs
    assert torch.equal(state_a, state_b)
    assert len(a) == len(b) == 4 and all(len(x) == 2 and len(y) == 3 for x, y in zip(a, b))
    for (img_a, mask_a), (img_b, mask_b, maps) in zip(a, b):
        assert torch.equal(img_a, img_b) and torch.equal(mask_a, mask_b)
        assert [m.shape for m in maps] == [(3, 2, 16, 16), (3, 6, 16, 16), (3, 8, 8, 8)]


def test_a_cache_too_large_is_refused_in_one_line():
    from pncd.distill.cache import build_cache, check_fits
    from pncd.errors import PncdError

    check_fits(2_000_000_000, 100, ranks=2, limit=8_000_000_000)  # 4 of 8 GB: fits
    with pytest.raises(PncdError) as e:
        check_fits(3_000_000_000, 2198, ranks=2, limit=8_000_000_000)
    msg = str(e.value)
    assert "\n" not in msg and "3.00 GB" in msg and "2198" in msg and "2 processes" in msg and "drop --teacher-cache" in msg
    ss = _slices(n=6)
    with pytest.raises(PncdError, match=r"needs 30\.7 kB for 6 training slices, .*drop --teacher-cache"):
        build_cache(_runner(FlipSymmetricTeacher(), ["stem", "deep"]), ss.images, show=False, limit=10_000)  # 6 x 5120 B


def test_outputs_beyond_float16_are_refused():
    from pncd.distill.cache import build_cache
    from pncd.errors import PncdError

    class Loud(nn.Module):
        def forward(self, x):
            return torch.cat([x, x], 1) * 1e6

    with pytest.raises(PncdError, match=r"values up to .*beyond float16's range .*drop --teacher-cache"):
        build_cache(_runner(Loud(), []), _slices(n=3).images, show=False)


# -- through the command line, on the synthetic phantoms -----------------------------------------

TINY = ["--size", "32", "--batch", "4", "--steps-per-epoch", "3", "--seed", "7", "--threads", "1"]

KILLED_AT_STEP_4 = KILL_AFTER_STEP + """
from pncd.distill.options import DistillOptions, DistillRun
from pncd.distill.run import distill
from pncd.options import DataOptions, TrainOptions

low, high = sys.argv[4], sys.argv[5]
distill(DistillRun(teacher="user_teacher:build", teacher_weights=sys.argv[3], student="enet", out=sys.argv[2], threads=1,
                   distill=DistillOptions(taps=[(low, "stem"), (high, "deep")], teacher_cache=True),
                   data=DataOptions(data=sys.argv[1], size=32),
                   train=TrainOptions(epochs=2, batch=4, steps_per_epoch=3, workers=0, seed=7), on_step=[kill_after(4)]))
"""


def _steps(run) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["type"] == "step"]


def test_cached_run_records_pairs_and_resumes(synthetic_root, tmp_path, user_teacher):
    weights, env, taps = user_teacher
    teacher = ["--teacher", "user_teacher:build", "--teacher-weights", weights, "--student", "enet", "--data", synthetic_root, *taps]
    full = run_cli("distill", *teacher, "--epochs", "2", *TINY, "--log-every", "1", "--teacher-cache", "--out",
                   tmp_path / "cached", env=env)
    assert full.returncode == 0, full.stderr
    assert "teacher cache: 36 slices" in full.stdout  # 6 train cases x 6 slices
    cfg = json.loads((tmp_path / "cached" / "config.json").read_text())
    assert cfg["options"]["teacher_cache"] is True and cfg["distill"]["teacher_cache"] is True
    info = cfg["distill"]["teacher_cache_info"]
    assert info["slices"] == 36 and info["dtype"] == "float16" and info["shapes"] == [[2, 32, 32], [12, 16, 16], [20, 4, 4]]
    assert info["bytes"] == 36 * 2 * (2 * 32 * 32 + 12 * 16 * 16 + 20 * 4 * 4)

    # a live run with the same seed draws the same batches: equal Loss_seg while the weights are
    # still equal (step 1; the first step has kd_scale 0, so step 2 too), then the targets differ
    live = run_cli("distill", *teacher, "--epochs", "1", *TINY, "--log-every", "1", "--out", tmp_path / "live", env=env)
    assert live.returncode == 0, live.stderr
    assert json.loads((tmp_path / "live" / "config.json").read_text())["distill"]["teacher_cache"] is False
    c, lv = _steps(tmp_path / "cached"), _steps(tmp_path / "live")
    assert c[0]["kd_scale"] == 0.0 and [r["loss_seg"] for r in c[:2]] == [r["loss_seg"] for r in lv[:2]]
    assert c[0]["pmd"] != lv[0]["pmd"]  # an augmented sample's teacher outputs are the approximation

    # killed in its second epoch and resumed with --resume alone: the cache is rebuilt (the option
    # comes back from config.json) and the run ends with the uninterrupted run's weights
    run = tmp_path / "resumed"
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_STEP_4, str(synthetic_root), str(run), str(weights),
                             taps[1].split("=")[0], taps[3].split("=")[0]], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **env}, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    after_first_epoch = load_file(str(run / "last.safetensors"))
    resumed = run_cli("distill", "--out", run, "--resume", "--threads", "1", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "teacher cache: 36 slices" in resumed.stdout
    a, b = load_file(str(tmp_path / "cached" / "last.safetensors")), load_file(str(run / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(b[k], after_first_epoch[k]) for k in b)  # the resumed epoch trained


def test_cached_run_under_torchrun(synthetic_root, tmp_path, user_teacher):
    """Each rank builds its own cache (each samples the whole train split) and trains from it."""
    weights, env, taps = user_teacher
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "pncd.cli",
           "distill", "--teacher", "user_teacher:build", "--teacher-weights", str(weights), "--student", "enet", *taps,
           "--data", str(synthetic_root), "--epochs", "1", "--out", str(out), "--device", "cpu", "--teacher-cache",
           "--size", "32", "--batch", "4", "--steps-per-epoch", "2", "--no-check-teacher"]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **env}, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("teacher cache: 36 slices") == 1  # printed by rank 0 only
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["distill"]["teacher_cache_info"]["runtime"] == "torch"  # every rank keeps the torch teacher
    rows = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["type"] == "epoch"]
    assert len(rows) == 1 and np.isfinite(rows[0]["loss"]) and rows[0]["pnscd"] >= 0
