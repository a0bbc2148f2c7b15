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

Steps are interleaved (plain, then distill and teacher for each runtime, plain, ...) so that
load from other processes on this shared machine hits all of them alike; the median of each
is reported.

    python bench/experiments/distill_overhead.py [--size 256] [--batch 8] [--steps 10] [--students enet,mobilenetv2,resnet18]
        [--teacher-runtime torch,openvino,openvino-int8] [--threads 1] [--json FILE]

``openvino-int8`` calibrates the (random-weight) teacher on random images: its speed is what
this measures; what INT8 does to the students is measured by lgg_distill.py --int8-teacher.
"""

from __future__ import annotations

import argparse
import copy
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
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    amp = torch.autocast(dev.type, dtype=torch.float16 if dev.type == "cuda" else torch.bfloat16, enabled=a.amp)
    if a.threads:
        torch.set_num_threads(a.threads)
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

        student.train(), pncd.training.run()
        fns[f"distill:{rt}"], fns[f"teacher:{rt}"] = distill_step, teacher_fwd
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
    return rows


if __name__ == "__main__":
    main()
