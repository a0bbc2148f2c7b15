"""Cost of one PNCD distillation step against one plain student training step.

For each student with the DCSAU-Net teacher at 256x256 (same batch, same machine, one run),
times: (a) a plain training step of the student (forward, CE + soft Dice, backward, Adam),
(b) a distillation step with all four modules, (c) the teacher's forward alone, and prints

    ratio       = distill step / plain step              (target: <= 1.6)
    beyond      = (distill step - teacher forward) / plain step
                  (what the losses, hooks and heads add on top of the unavoidable teacher pass)

(b) and (c) are timed for each teacher runtime of ``--teacher-runtime`` (comma-separated,
e.g. ``torch,openvino``: pncd distill's ``--teacher-runtime``, the teacher run exactly as
``PNCD`` runs it), side by side in the same run.

``--cache`` adds the arm of ``pncd distill --teacher-cache`` (pncd.distill.cache), with the
teacher of the first runtime listed: the teacher runs once over ``--cache-slices`` random slices
(``build_cache``, timed: its cost per slice), and a cached step is the distillation step fed the
cached outputs of a batch (``PNCD(..., teacher_outputs=...)``) plus what transforming those
outputs costs: fetching the batch through ``SegDataset`` with its augmentation, with the cache
minus without it (``cache_fetch_s``; the image's own augmentation, which a plain run pays too,
is not counted, as the plain step here reads a fixed batch). The one-time build is reported
apart and amortised over ``--passes`` (comma-separated: how many times a run draws each training
slice; ``pncd train``'s default is 50 epochs of one pass; the LGG recipe of lgg_distill.py,
15 x 100 steps x 8 over 2,198 slices, is 5.46): ``build per step = build per slice x batch / passes``.

``--fidelity-teacher RUN --fidelity-data DIR`` measures instead what the cache costs in
faithfulness, on real data: for ``--fidelity-slices`` training slices of a teacher run, the cached
outputs of the augmented sample (as the dataset gives them) against the teacher run on that
sample: the teacher's argmax agreement, the relative L2 error of its logits, KL(live || cached)
of the softmax at T=4 (PMD's), and for each tapped feature the relative L2 error of the map and
of RMD's importance map and the cosine of the class-region vectors (what RD and PNSCD read),
un-augmented (the float16 rounding alone), with the run's augmentation, with flips only, and with
the rotation only (what a cache of the teacher's outputs of every flipped slice, 4x the memory,
would leave). No training step is timed then.

Steps are interleaved (plain, then distill and teacher for each runtime, plain, ...) so that
load from other processes on this shared machine hits all of them alike; the median of each
is reported.

    python bench/experiments/distill_overhead.py [--size 256] [--batch 8] [--steps 10] [--students enet,mobilenetv2,resnet18]
        [--teacher-runtime torch,openvino,openvino-int8] [--cache] [--passes 5.46,50] [--threads 1] [--json FILE]

``openvino-int8`` calibrates the (random-weight) teacher on random images: its speed is what
this measures; what INT8 does to the students is measured by lgg_distill.py --int8-teacher.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--students", default="enet,mobilenetv2,resnet18")
    ap.add_argument("--teacher", default="dcsaunet")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (CUDA: timed with torch.cuda.synchronize)")
    ap.add_argument("--amp", action="store_true", help="float16 autocast around every step, as pncd train/distill do on CUDA")
    ap.add_argument("--teacher-runtime", default="torch",
                    help="comma-separated teacher runtimes to time side by side (pncd distill --teacher-runtime: auto, torch, openvino, openvino-int8)")
    ap.add_argument("--cache", action="store_true", help="add the --teacher-cache arm (teacher: the first runtime listed)")
    ap.add_argument("--cache-slices", type=int, default=64, help="random slices the timed cache build runs the teacher over")
    ap.add_argument("--passes", default="5.46,50", help="comma-separated draws per training slice to amortise the build over")
    ap.add_argument("--fidelity-teacher", default=None, help="a teacher run: measure the cache's faithfulness (see above)")
    ap.add_argument("--fidelity-data", default=None, help="its data set root (read in place)")
    ap.add_argument("--fidelity-slices", type=int, default=256)
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    amp = torch.autocast(dev.type, dtype=torch.float16 if dev.type == "cuda" else torch.bfloat16, enabled=a.amp)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.fidelity_teacher:
        return fidelity(a)
    from pncd.losses import SegLoss
    from pncd.models import create

    torch.manual_seed(0)
    teacher = create(a.teacher).eval().to(dev)
    x = torch.randn(a.batch, 1, a.size, a.size, device=dev)
    y = torch.zeros(a.batch, a.size, a.size, dtype=torch.long, device=dev)
    y[:, a.size // 4 : a.size // 2, a.size // 3 : a.size // 2] = 1
    y[::2] = 0  # some images without lesion, as in real data
    seg = SegLoss(2)
    rows = []
    runtimes = [r.strip() for r in a.teacher_runtime.split(",") if r.strip()]
    for name in a.students.split(","):
        rows += time_student(a, name, runtimes, teacher, x, y, seg, dev, sync, amp)
    if a.json:
        from pncd.bench.machine import host_machine
        from pncd.io import versions, write_json
        from pncd.targets.cpu import isa_summary

        write_json(a.json, {"rows": rows, "machine": {**host_machine(), "cpu_isa": isa_summary()}, "versions": versions(),
                            "command": " ".join(["python", *sys.argv])})


def time_student(a, name, runtimes, teacher, x, y, seg, dev, sync, amp) -> list[dict]:
    """Plain step, and distill step and teacher forward per teacher runtime, interleaved; one row per runtime."""
    from pncd.distill.engine import PNCD, DistillOptions
    from pncd.models import create

    plain = create(name).to(dev)
    opt_p = torch.optim.Adam(plain.parameters(), lr=1e-3)

    def plain_step():
        with amp:
            loss = seg(plain(x), y)["loss"]
        opt_p.zero_grad(set_to_none=True)
        loss.backward()
        opt_p.step()

    fns = {"plain": plain_step}
    used: dict[str, str] = {}
    agreement: dict[str, float] = {}
    for rt in runtimes:
        student = create(name).to(dev)
        student.load_state_dict(plain.state_dict())
        # M as in training: (slice, class present) samples; here a lesion in half the slices of a 1000-slice set
        # openvino-int8 calibrates on random images and is not held to --int8-agreement: the teacher's
        # weights are random too, so only its speed means anything here (its agreement is recorded)
        calib = torch.randn(128, 1, a.size, a.size, generator=torch.Generator().manual_seed(1)).numpy() if rt == "openvino-int8" else None
        pncd = PNCD(student, copy.deepcopy(teacher), DistillOptions(teacher_runtime=rt, int8_agreement=0.0), num_classes=2,
                    channels=1, size=a.size, n_region_samples=1500, device=dev, calibration=calib)
        used[rt] = pncd.runner.name
        if getattr(pncd.runner, "quantization", None):
            agreement[rt] = pncd.runner.quantization["check"]["argmax_agreement"]
        opt_d = torch.optim.Adam(list(student.parameters()) + list(pncd.losses.parameters()), lr=1e-3)

        def distill_step(student=student, pncd=pncd, opt_d=opt_d):
            with amp:
                loss = pncd(student, x, y, seg)["loss"]
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()

        def teacher_fwd(pncd=pncd):
            with amp:
                pncd.teacher_forward(x)  # the teacher as distillation runs it (pncd.distill.teacher_runtime)

        student.train(), pncd.train()
        fns[f"distill:{rt}"], fns[f"teacher:{rt}"] = distill_step, teacher_fwd
        if a.cache and rt == runtimes[0]:
            cache_arm = cached_fns(a, name, plain, teacher, x, y, seg, dev, amp, rt)
            fns.update(cache_arm.pop("fns"))
    plain.train()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(a.warmup + a.steps):
        for key, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if i >= a.warmup:
                times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for rt in runtimes:
        d, t, p = med[f"distill:{rt}"], med[f"teacher:{rt}"], med["plain"]
        rows.append({"student": name, "teacher": a.teacher, "teacher_runtime": rt, "teacher_runtime_used": used[rt],
                     "size": a.size, "batch": a.batch, "device": str(dev), "amp": a.amp,
                     "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, "threads": torch.get_num_threads(),
                     "steps": a.steps, "plain_s": p, "distill_s": d, "teacher_fwd_s": t, "ratio": d / p,
                     "beyond_teacher_ratio": (d - t) / p, **({"int8_argmax_agreement": agreement[rt]} if rt in agreement else {})})
        print(f"{name:12s} {rt:13s} plain {p*1e3:8.1f} ms  distill {d*1e3:8.1f} ms  teacher fwd {t*1e3:8.1f} ms"
              f"  ratio {d / p:.2f}  (distill - teacher)/plain {(d - t) / p:.2f}", flush=True)
    if a.cache:
        rows.append(cache_row(a, name, cache_arm, med))
    return rows


def cached_fns(a, name, plain, teacher, x, y, seg, dev, amp, rt) -> dict:
    """The --teacher-cache arm: a cache of ``--cache-slices`` random slices built (and timed) by
    the teacher of runtime ``rt``; the step from cached outputs; the batch fetched through
    SegDataset with and without the cache (random indices, the run's augmentation)."""
    from pncd.data import SegDataset
    from pncd.data.spec import SliceSet
    from pncd.distill.cache import build_cache, split_outputs
    from pncd.distill.engine import PNCD, DistillOptions
    from pncd.models import create

    student = create(name).to(dev)
    student.load_state_dict(plain.state_dict())
    pncd = PNCD(student, copy.deepcopy(teacher), DistillOptions(teacher_runtime=rt), num_classes=2, channels=1, size=a.size,
                n_region_samples=1500, device=dev)
    gen = torch.Generator().manual_seed(2)
    n = a.cache_slices
    images = torch.randn(n, 1, a.size, a.size, generator=gen).numpy()
    masks = y[torch.arange(n) % len(y)].cpu().numpy()
    pncd.runner(x)  # warm (OpenVINO's first call)
    cache = build_cache(pncd.runner, images, dev, show=False)
    slices = SliceSet(images, masks, [str(i) for i in range(n)], list(range(n)), [""] * n)
    live_ds, cached_ds = SegDataset(slices, augment=True), SegDataset(slices, augment=True, extras=cache)
    opt = torch.optim.Adam(list(student.parameters()) + list(pncd.losses.parameters()), lr=1e-3)
    batch = torch.utils.data.default_collate([cached_ds[i] for i in range(a.batch)])
    outputs = split_outputs([t.to(dev) for t in batch[2]])

    def fetch(ds):
        idx = torch.randint(0, n, (a.batch,)).tolist()
        return torch.utils.data.default_collate([ds[i] for i in idx])

    def cached_step():
        with amp:
            loss = pncd(student, x, y, seg, teacher_outputs=outputs)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    student.train(), pncd.train()
    fns = {"distill:cached": cached_step, "fetch:plain": lambda: fetch(live_ds), "fetch:cached": lambda: fetch(cached_ds)}
    return {"fns": fns, "build_per_slice_s": cache.seconds / n, "cache_bytes_per_slice": cache.nbytes / n,
            "runtime": rt, "runtime_used": pncd.runner.name}


def fidelity(a) -> None:
    """The cached outputs of augmented samples against the teacher run on them (real data)."""
    import numpy as np

    from pncd.bench.machine import host_machine
    from pncd.checkpoint import load_model
    from pncd.data import DataSpec, SegDataset, load_split
    from pncd.data.images import evenly_spaced
    from pncd.distill.cache import build_cache
    from pncd.distill.teacher import prepare_teacher
    from pncd.distill.teacher_runtime import TorchTeacher
    from pncd.io import versions, write_json
    from pncd.models import FeatureTaps
    from pncd.privacy import public

    teacher, cfg = load_model(a.fidelity_teacher)
    spec = DataSpec.from_dict({**cfg["data"], "root": a.fidelity_data})
    train = load_split(spec, "train")
    idx = evenly_spaced(len(train), a.fidelity_slices)
    images, masks = train.images[idx], train.masks[idx]
    names = [teacher.taps[k].module for k in ("low", "high")]
    teacher = prepare_teacher(teacher, "cpu")
    runner = TorchTeacher(teacher, FeatureTaps(teacher, names), names)
    cache = build_cache(runner, images, show=False)
    subset = dataclasses.replace(train, images=images, masks=masks, case_ids=[train.case_ids[i] for i in idx],
                                 slice_index=[train.slice_index[i] for i in idx], sources=[train.sources[i] for i in idx])
    out = {"teacher": a.fidelity_teacher, "model": cfg["model"]["name"], "size": spec.size, "slices": len(idx),
           "taps": names, "cache_bytes_per_slice": cache.nbytes / len(idx), "arms": {}}
    arms = {"none (un-augmented)": (False, 15.0), "flips and rotation (the run's)": (True, 15.0), "flips only": (True, 0.0),
            "rotation only (as a cache of the 4 flipped slices would give)": ("flip-exact", 15.0)}
    for arm, (augment, rotation) in arms.items():
        ds = SegDataset(subset, augment=bool(augment), rotation=rotation, extras=cache)
        m: dict[str, list[float]] = {"argmax_agreement": [], "logits_rel_l2": [], "kl_t4": []}
        for i in range(len(ds)):
            torch.manual_seed(i)
            image, mask, maps = ds[i] if augment != "flip-exact" else flip_exact(ds, runner, i)
            logits, feats = runner(image[None])
            m["argmax_agreement"].append(float((maps[0].argmax(0) == logits[0].argmax(0)).float().mean()))
            m["logits_rel_l2"].append(float((maps[0] - logits[0]).norm() / logits[0].norm()))
            for n, got, ref in zip(names, maps[1:], feats):  # each tap as the feature losses read it
                for key, value in feature_errors(got[None], ref, mask[None], int(cfg["data"]["num_classes"])).items():
                    m.setdefault(f"{n}_{key}", []).append(value)
            p, q = torch.log_softmax(logits[0] / 4, 0), torch.log_softmax(maps[0] / 4, 0)
            m["kl_t4"].append(float((p.exp() * (p - q)).sum(0).mean()))
        out["arms"][arm] = {k: {"mean": float(np.mean(v)), "median": float(np.median(v)), "p95": float(np.percentile(v, 95))}
                            for k, v in m.items()}
        print(arm + ": " + ", ".join(f"{k} mean {v['mean']:.4g}" for k, v in out["arms"][arm].items()), flush=True)
    if a.json:
        doc = {**out, "machine": host_machine(), "versions": versions(), "command": " ".join(["python", *sys.argv])}
        write_json(a.json, public(doc))  # no absolute path (the data set's) in a shareable result


def flip_exact(ds, runner, i: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Slice i augmented as the dataset does, with the maps of a cache that held the teacher's
    outputs of each flipped slice too: the teacher run on the flipped slice, then only rotated."""
    from torchvision import tv_tensors

    from pncd.data.dataset import GeometryProbe, follow

    image, mask = (torch.from_numpy(t[i]) for t in (ds.sliceset.images, ds.sliceset.masks))
    low = image.min()
    img_t, mask_t, probe = ds.transform(tv_tensors.Image(image - low), tv_tensors.Mask(mask), GeometryProbe.new())
    flipped = image
    for op, _ in probe.ops:
        flipped = flipped.flip(-1) if op == "hflip" else flipped.flip(-2) if op == "vflip" else flipped
    logits, feats = runner(flipped[None])
    rotation = [op for op in probe.ops if op[0] == "rotate"]
    maps = [follow(t[0], rotation) for t in (logits, *feats)]
    return img_t.as_subclass(torch.Tensor) + low, mask_t.as_subclass(torch.Tensor).long(), maps


def feature_errors(got: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, classes: int) -> dict[str, float]:
    """How far a cached feature (1, C, h, w) is from the live one: relative L2 of the map, of
    RMD's importance map (emkd) and, per class present, cosine of the region vectors (RD, PNSCD)."""
    from pncd.distill.region import region_vectors
    from pncd.distill.rmd import RMDLoss

    imp = RMDLoss("emkd").importance
    (vg, present), (vr, _) = region_vectors(got, mask, classes), region_vectors(ref, mask, classes)
    cos = torch.nn.functional.cosine_similarity(vg[present], vr[present], dim=-1)
    return {"rel_l2": float((got - ref).norm() / ref.norm()),
            "importance_rel_l2": float((imp(got) - imp(ref)).norm() / imp(ref).norm()),
            "region_cos": float(cos.mean())}


def cache_row(a, name, arm, med) -> dict:
    """The cached arm's row: step from the cache + the cached maps' transform, against the plain step."""
    p, dc = med["plain"], med["distill:cached"]
    fetch = med["fetch:cached"] - med["fetch:plain"]
    step = dc + fetch
    build = arm["build_per_slice_s"] * a.batch  # the teacher's share of one batch, paid once per slice
    passes = [float(v) for v in a.passes.split(",") if v.strip()]
    amortised = {f"{v:g}": (step + build / v) / p for v in passes}
    row = {"student": name, "teacher": a.teacher, "teacher_runtime": "cache", "cache_built_with": arm["runtime_used"],
           "size": a.size, "batch": a.batch, "device": a.device, "amp": a.amp, "threads": torch.get_num_threads(),
           "steps": a.steps, "plain_s": p, "distill_from_cache_s": dc, "fetch_plain_s": med["fetch:plain"],
           "fetch_cached_s": med["fetch:cached"], "cache_fetch_s": fetch, "cached_step_s": step, "ratio": step / p,
           "cache_slices_timed": a.cache_slices, "cache_build_per_slice_s": arm["build_per_slice_s"],
           "cache_bytes_per_slice": arm["cache_bytes_per_slice"], "cache_build_per_batch_s": build,
           "amortised_ratio_by_passes": amortised}
    print(f"{name:12s} {'cache':13s} plain {p*1e3:8.1f} ms  cached step {step*1e3:8.1f} ms (distill {dc*1e3:.1f} + maps' "
          f"transform {fetch*1e3:.1f})  ratio {step / p:.2f}  build {arm['build_per_slice_s']*1e3:.1f} ms/slice, "
          + ", ".join(f"{k} passes: {v:.2f}" for k, v in amortised.items()), flush=True)
    return row


if __name__ == "__main__":
    main()
