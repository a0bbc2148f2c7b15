"""The statistics and the report of ``pncd compare``: paired per-patient differences, bootstrap
interval, Wilcoxon signed-rank test, share of the teacher-student gap closed, per-fold table,
verdict; written as compare.json, compare.md and compare.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

N_BOOT = 10000
CONFIDENCE = 0.95


def _merge(results: list[dict[str, Any]], name: str) -> tuple[dict[str, float], dict[str, int]]:
    """Per-patient Dice of job ``name`` over every fold, and each patient's fold."""
    dice: dict[str, float] = {}
    fold: dict[str, int] = {}
    for r in results:
        if r["name"] == name:
            for case, d in r["dice"].items():
                dice[case] = float(d)
                fold[case] = int(r["fold"])
    return dice, fold


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p of the paired values (None below 2 pairs; 1.0 when every
    difference is 0)."""
    from scipy.stats import wilcoxon

    d = a - b
    if d.size < 2:
        return None
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(a, b, zero_method="wilcox").pvalue)


def verdict(lo: float | None, hi: float | None) -> str:
    """What the interval says: "helped", "hurt" or "no measurable effect"."""
    if lo is None or hi is None:
        return "not measured"
    if lo > 0:
        return "helped"
    if hi < 0:
        return "hurt"
    return "no measurable effect"


def compare_arm(teacher: dict[str, float], alone: dict[str, float], arm: dict[str, float],
                fold: dict[str, int]) -> dict[str, Any]:
    """Paired statistics of ``arm - alone`` over the patients both arms scored."""
    from pncd.bench.stats import paired_bootstrap

    cases = sorted(set(alone) & set(arm))
    a = np.array([alone[c] for c in cases])
    x = np.array([arm[c] for c in cases])
    boot = paired_bootstrap(x, a, n_boot=N_BOOT, seed=0, confidence=CONFIDENCE)
    with_teacher = [c for c in cases if c in teacher]
    t_mean = float(np.mean([teacher[c] for c in with_teacher])) if with_teacher else None
    a_t = float(np.mean([alone[c] for c in with_teacher])) if with_teacher else None
    x_t = float(np.mean([arm[c] for c in with_teacher])) if with_teacher else None
    gap = None
    if t_mean is not None and a_t is not None and x_t is not None and t_mean - a_t > 1e-9:
        gap = (x_t - a_t) / (t_mean - a_t)
    per_fold = []
    for f in sorted({fold[c] for c in cases}):
        fc = [c for c in cases if fold[c] == f]
        per_fold.append({"fold": f, "n": len(fc), "alone": float(np.mean([alone[c] for c in fc])),
                         "arm": float(np.mean([arm[c] for c in fc])),
                         "teacher": float(np.mean([teacher[c] for c in fc if c in teacher])) if any(c in teacher for c in fc) else None,
                         "diff": float(np.mean([arm[c] - alone[c] for c in fc]))})
    return {"n_patients": len(cases), "alone_mean": float(a.mean()) if a.size else None,
            "arm_mean": float(x.mean()) if x.size else None, "teacher_mean": t_mean,
            "diff_mean": boot["mean"], "ci": [boot["lo"], boot["hi"]], "ci_method": boot["method"], "n_boot": N_BOOT,
            "confidence": CONFIDENCE, "wilcoxon_p": wilcoxon_p(x, a), "gap_closed": gap,
            "verdict": verdict(boot["lo"], boot["hi"]), "per_fold": per_fold,
            "patients": {c: {"fold": fold[c], "alone": alone[c], "arm": arm[c], "teacher": teacher.get(c)} for c in cases}}


def sentence(student: str, arm: str, r: dict[str, Any]) -> str:
    """The one plain sentence of a comparison."""
    if r["diff_mean"] is None:
        return f"{student} + {arm}: not measured (no patient scored by both arms)"
    lo, hi = r["ci"]
    p = r["wilcoxon_p"]
    gap = f"; closes {r['gap_closed']:.0%} of the gap to the teacher" if r["gap_closed"] is not None else \
        "; the teacher is not above the student alone, so there is no gap to close"
    return (f"{student} + {arm} vs {student} alone: {r['verdict']} ({r['diff_mean']:+.4f} Dice per patient, "
            f"{r['confidence']:.0%} CI {lo:+.4f} to {hi:+.4f}, Wilcoxon p = {'n/a' if p is None else f'{p:.3g}'}, "
            f"{r['n_patients']} patients{gap})")


def summarize(results: list[dict[str, Any]], students: list[str], arms: list[str]) -> dict[str, Any]:
    teacher, t_fold = _merge(results, "teacher")
    out: dict[str, Any] = {"teacher": {"mean_dice": float(np.mean(list(teacher.values()))) if teacher else None,
                                       "n_patients": len(teacher), "dice": teacher, "fold": t_fold},
                           "students": {}, "verdicts": []}
    for st in students:
        alone, fold = _merge(results, f"{st}-alone")
        entry: dict[str, Any] = {"alone": {"mean_dice": float(np.mean(list(alone.values()))) if alone else None,
                                           "dice": alone, "fold": fold}}
        for arm in arms:
            if arm == "alone":
                continue
            scored, arm_fold = _merge(results, f"{st}-{arm}")
            r = compare_arm(teacher, alone, scored, {**fold, **arm_fold})
            entry[arm] = r
            out["verdicts"].append(sentence(st, arm, r))
        out["students"][st] = entry
    return out


def markdown(summary: dict[str, Any]) -> str:
    t = summary["teacher"]
    plan = summary.get("plan", {})
    lines = ["# Does distillation help? Patient-level cross-validation", ""]
    lines += [f"Folds: {len(plan.get('folds', []))} ({plan.get('folds_file', '')}); teacher: {plan.get('teacher', '')}, "
              f"per-patient Dice {t['mean_dice']:.4f} over {t['n_patients']} patients." if t["mean_dice"] is not None
              else "Teacher: not scored.", ""]
    lines += ["| student | arm | patients | alone | arm | teacher | arm − alone (95% CI) | Wilcoxon p | gap closed | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for st, entry in summary["students"].items():
        for arm, r in entry.items():
            if arm == "alone" or r["diff_mean"] is None:
                continue
            lo, hi = r["ci"]
            p = "n/a" if r["wilcoxon_p"] is None else f"{r['wilcoxon_p']:.3g}"
            gap = "n/a" if r["gap_closed"] is None else f"{r['gap_closed']:.0%}"
            tm = "n/a" if r["teacher_mean"] is None else f"{r['teacher_mean']:.4f}"
            lines.append(f"| {st} | {arm} | {r['n_patients']} | {r['alone_mean']:.4f} | {r['arm_mean']:.4f} | {tm} | "
                         f"{r['diff_mean']:+.4f} ({lo:+.4f} to {hi:+.4f}) | {p} | {gap} | {r['verdict']} |")
    lines += ["", "Per fold (mean per-patient Dice of the fold's held-out patients):", "",
              "| student | arm | fold | patients | teacher | alone | arm | arm − alone |", "|---|---|---|---|---|---|---|---|"]
    for st, entry in summary["students"].items():
        for arm, r in entry.items():
            if arm == "alone":
                continue
            for f in r["per_fold"]:
                tm = "n/a" if f["teacher"] is None else f"{f['teacher']:.4f}"
                lines.append(f"| {st} | {arm} | {f['fold']} | {f['n']} | {tm} | {f['alone']:.4f} | {f['arm']:.4f} | {f['diff']:+.4f} |")
    lines += ["", "The interval is a percentile bootstrap over patients (paired: both arms resampled together); "
              "the gap closed is (arm − alone) / (teacher − alone) of the means.", ""]
    lines += [f"**{v}**" for v in summary["verdicts"]]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    """Per student: each patient's arm − alone difference by fold, the mean and its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(st, arm, r) for st, e in summary["students"].items() for arm, r in e.items()
            if arm != "alone" and r["diff_mean"] is not None]
    fig, axes = plt.subplots(1, max(1, len(rows)), figsize=(4.5 * max(1, len(rows)), 3.6), squeeze=False)
    for ax, (st, arm, r) in zip(axes[0], rows):
        pts = r["patients"]
        folds = sorted({p["fold"] for p in pts.values()})
        for f in folds:
            d = [p["arm"] - p["alone"] for p in pts.values() if p["fold"] == f]
            ax.scatter(np.full(len(d), f) + np.linspace(-0.15, 0.15, len(d)), d, s=10, alpha=0.6, label=f"fold {f}")
        lo, hi = r["ci"]
        ax.axhline(0, color="black", linewidth=0.8)
        ax.axhspan(lo, hi, color="tab:red", alpha=0.2, label=f"mean {r['diff_mean']:+.3f}, 95% CI")
        ax.axhline(r["diff_mean"], color="tab:red", linewidth=1.2)
        ax.set_xticks(folds)
        ax.set_xlabel("fold")
        ax.set_ylabel(f"Dice: {arm} − alone (per patient)")
        ax.set_title(f"{st}: {r['verdict']}", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def write_report(out: Path, summary: dict[str, Any]) -> None:
    from pncd.io import atomic_path, write_json, write_text
    from pncd.privacy import public

    summary = public(summary)  # no host name or absolute path
    write_json(out / "compare.json", summary)
    write_text(out / "compare.md", markdown(summary))
    with atomic_path(out / "compare.png") as tmp:
        plot(summary, tmp)
