"""Which PNCD term drives the student? Per-term gradient norms and their agreement with Loss_seg.

For a trained teacher run and a student (freshly initialised with --seed, or the weights of a
run with --student-run), draws --batches training batches (lesion-rich, as training samples
them, no augmentation) and, for each batch, computes the gradient that each weighted term
(Loss_seg, a*PMD, b1*RMD, b2*RD, b3*PNSCD) sends into the student's parameters. Prints, per term:

    value        the weighted term's mean value
    |grad|       the mean L2 norm of its gradient over all student parameters
    |grad|/seg   that norm relative to Loss_seg's
    cos(seg)     the mean cosine between its gradient and Loss_seg's (negative: it pulls the
                 student away from what the labels ask for)

and the teacher's logit statistics (mean |logit|, share of lesion pixels whose teacher
probability at T is above 0.5, the teacher's Dice on those batches). This is the diagnostic
behind the LGG finding in README "Distillation on LGG"; it takes a few minutes on a CPU.

    python bench/experiments/distill_gradients.py --teacher runs/dcsaunet --student enet [--student-run runs/enet-alone]
        [--batches 6] [--w-pmd 0.1 --w-rmd 0.9 --w-rd 0.9 --w-pnscd 0.9] [--rmd-variant paper] [--json F]
"""

from __future__ import annotations

import argparse
import json

import torch


def _flat_grad(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="teacher run directory")
    ap.add_argument("--student", default="enet")
    ap.add_argument("--student-run", default=None, help="start from this run's best weights instead of a fresh student")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lesion-fraction", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--w-pmd", type=float, default=0.1)
    ap.add_argument("--w-rmd", type=float, default=0.9)
    ap.add_argument("--w-rd", type=float, default=0.9)
    ap.add_argument("--w-pnscd", type=float, default=0.9)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--rmd-variant", default="paper", choices=["paper", "emkd"])
    ap.add_argument("--pnscd-norm", default="crd", choices=["crd", "none"])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    from pncd import checkpoint as ckpt
    from pncd import models
    from pncd.data import DataSpec, SegDataset, lesion_sampler_weights, load_split
    from pncd.distill.engine import PNCD, DistillOptions, count_region_samples
    from pncd.losses import SegLoss
    from pncd.metrics import dice

    torch.manual_seed(a.seed)
    teacher, t_cfg = ckpt.load_model(a.teacher, "best")
    spec = DataSpec.from_dict(t_cfg["data"])
    if a.student_run:
        student, s_cfg = ckpt.load_model(a.student_run, "best")
        if s_cfg["model"]["name"] != a.student:
            raise SystemExit(f"--student-run {a.student_run} holds {s_cfg['model']['name']}, not {a.student}")
    else:
        student = models.create(a.student, in_channels=spec.channels, num_classes=spec.num_classes)
    student.train()
    train = load_split(spec, "train")
    ds = SegDataset(train, augment=False)
    weights = lesion_sampler_weights(train, a.lesion_fraction)
    gen = torch.Generator().manual_seed(a.seed)
    dopts = DistillOptions(weights={"pmd": a.w_pmd, "rmd": a.w_rmd, "rd": a.w_rd, "pnscd": a.w_pnscd},
                           temperature=a.temperature,
                           rmd_variant=a.rmd_variant, pnscd_norm=a.pnscd_norm)
    pncd = PNCD(student, teacher, dopts, spec.num_classes, spec.channels, spec.size, count_region_samples(train.masks, spec.num_classes))
    seg = SegLoss(spec.num_classes)
    params = [p for p in student.parameters() if p.requires_grad]
    terms = ["loss_seg", *dopts.active()]
    acc: dict[str, dict[str, list[float]]] = {t: {"value": [], "norm": [], "cos": []} for t in terms}
    t_stats = {"abs_logit": [], "lesion_confident": [], "teacher_dice": [], "student_dice": []}
    for b in range(a.batches):
        idx = torch.multinomial(weights, a.batch, replacement=True, generator=gen).tolist()
        items = [ds[i] for i in idx]
        x = torch.stack([it[0] for it in items])
        y = torch.stack([it[1] for it in items])
        out = pncd(student, x, y, seg)
        g_seg = _flat_grad(out["loss_seg"], params)
        for t in terms:
            w = 1.0 if t == "loss_seg" else dopts.weight(t)
            g = g_seg if t == "loss_seg" else _flat_grad(w * out[t], params)
            acc[t]["value"].append(float(w * out[t].detach()))
            acc[t]["norm"].append(float(g.norm()))
            acc[t]["cos"].append(float(torch.nn.functional.cosine_similarity(g, g_seg, dim=0)))
        with torch.inference_mode():
            zt = teacher(x)
            zs = student(x)
        p_t = torch.softmax(zt / a.temperature, dim=1)[:, 1]
        lesion = y == 1
        t_stats["abs_logit"].append(float(zt.abs().mean()))
        if lesion.any():
            t_stats["lesion_confident"].append(float((p_t[lesion] > 0.5).float().mean()))
        t_stats["teacher_dice"].append(float(dice(zt.argmax(1).numpy() == 1, y.numpy() == 1)))
        t_stats["student_dice"].append(float(dice(zs.argmax(1).numpy() == 1, y.numpy() == 1)))
        print(f"batch {b + 1}/{a.batches}: " + "  ".join(f"{t} {acc[t]['value'][-1]:.3f}" for t in terms), flush=True)

    def mean(v: list[float]) -> float:
        return sum(v) / len(v) if v else float("nan")

    seg_norm = mean(acc["loss_seg"]["norm"])
    rows = [{"term": t, "value": mean(acc[t]["value"]), "grad_norm": mean(acc[t]["norm"]),
             "grad_norm_vs_seg": mean(acc[t]["norm"]) / seg_norm, "cos_with_seg": mean(acc[t]["cos"])} for t in terms]
    stats = {k: mean(v) for k, v in t_stats.items()}
    print(f"\nteacher {a.teacher}  student {a.student} ({'weights of ' + a.student_run if a.student_run else 'fresh, seed %d' % a.seed})"
          f"  rmd={a.rmd_variant} pnscd-norm={a.pnscd_norm} T={a.temperature}")
    print(f"{'term':10s} {'value':>9s} {'|grad|':>10s} {'|grad|/seg':>11s} {'cos(seg)':>9s}")
    for r in rows:
        print(f"{r['term']:10s} {r['value']:9.3f} {r['grad_norm']:10.4f} {r['grad_norm_vs_seg']:11.2f} {r['cos_with_seg']:9.3f}")
    print("teacher: mean |logit| {abs_logit:.1f}, lesion pixels with p_t(T) > 0.5: {lesion_confident:.2f}, "
          "batch Dice {teacher_dice:.3f}; student batch Dice {student_dice:.3f}".format(**stats))
    if a.json:
        from pncd.io import versions, write_json

        write_json(a.json, {"args": vars(a), "rows": rows, "teacher": stats, "versions": versions()})


if __name__ == "__main__":
    main()
