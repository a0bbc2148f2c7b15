"""Cost of one PNCD distillation step against one plain student training step.

For each student with the DCSAU-Net teacher at 256x256 (same batch, same machine, one run),
times: (a) a plain training step of the student (forward, CE + soft Dice, backward, Adam),
(b) a distillation step with all four modules, (c) the teacher's forward alone, and prints

    ratio       = distill step / plain step              (the issue's goal: <= 1.6)
    beyond      = (distill step - teacher forward) / plain step
                  (what the losses, hooks and heads add on top of the unavoidable teacher pass)

Steps are interleaved (plain, distill, teacher, plain, ...) so that load from other processes
on this shared machine hits all three alike; the median of each is reported.

    python bench/experiments/distill_overhead.py [--size 256] [--batch 8] [--steps 10] [--students enet,mobilenetv2,resnet18]
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    amp = torch.autocast(dev.type, dtype=torch.float16 if dev.type == "cuda" else torch.bfloat16, enabled=a.amp)
    if a.threads:
        torch.set_num_threads(a.threads)
    from pncd.distill.engine import PNCD, DistillOptions
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
    for name in a.students.split(","):
        plain = create(name).to(dev)
        student = create(name).to(dev)
        student.load_state_dict(plain.state_dict())
        # M as in training: (slice, class present) samples; here a lesion in half the slices of a 1000-slice set
        pncd = PNCD(student, teacher, DistillOptions(), num_classes=2, channels=1, size=a.size, n_region_samples=1500, device=dev)
        opt_p = torch.optim.Adam(plain.parameters(), lr=1e-3)
        opt_d = torch.optim.Adam(list(student.parameters()) + list(pncd.losses.parameters()), lr=1e-3)

        def plain_step():
            with amp:
                loss = seg(plain(x), y)["loss"]
            opt_p.zero_grad(set_to_none=True)
            loss.backward()
            opt_p.step()

        def distill_step():
            with amp:
                loss = pncd(student, x, y, seg)["loss"]
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()

        def teacher_fwd():
            with amp:
                pncd.teacher_forward(x)  # the teacher as distillation runs it (frozen, Conv+BN folded, channels_last)

        plain.train(), student.train(), pncd.train()
        times = {"plain": [], "distill": [], "teacher": []}
        for i in range(a.warmup + a.steps):
            for key, fn in (("plain", plain_step), ("distill", distill_step), ("teacher", teacher_fwd)):
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                dt = time.perf_counter() - t0
                if i >= a.warmup:
                    times[key].append(dt)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"student": name, "teacher": a.teacher, "size": a.size, "batch": a.batch, "device": str(dev), "amp": a.amp,
               "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, "threads": torch.get_num_threads(),
               "plain_s": med["plain"], "distill_s": med["distill"], "teacher_fwd_s": med["teacher"],
               "ratio": med["distill"] / med["plain"], "beyond_teacher_ratio": (med["distill"] - med["teacher"]) / med["plain"]}
        rows.append(row)
        print(f"{name:12s} plain {med['plain']*1e3:8.1f} ms  distill {med['distill']*1e3:8.1f} ms  teacher fwd {med['teacher']*1e3:8.1f} ms"
              f"  ratio {row['ratio']:.2f}  (distill - teacher)/plain {row['beyond_teacher_ratio']:.2f}", flush=True)
    if a.json:
        from pncd.io import versions, write_json

        write_json(a.json, {"rows": rows, "versions": versions()})


if __name__ == "__main__":
    main()
