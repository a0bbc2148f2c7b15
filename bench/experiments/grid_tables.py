"""The reference grid's tables: per-seed summaries and grid.md (see reference_grid.py).

Kept beside reference_grid.py (and imported by it as a sibling, as the experiment scripts import
each other) so that each file stays readable.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

STUDENTS = ("enet", "mobilenetv2", "resnet18")
TEACHERS = ("dcsaunet", "unet")
SINGLES = ("pmd", "rmd", "rd", "pnscd")
# The paper's numbers (Tables 1-3; private colorectal MRI, 375 patients, 512x512, up to 100 epochs).
PAPER = {"dcsaunet": 0.8906, "enet": (0.8074, 0.8566), "mobilenetv2": (0.7810, 0.8344), "resnet18": (0.7783, 0.8143),
         "ablation": {"pmd": 0.8098, "rmd": 0.8133, "rd": 0.8114, "pnscd": 0.8369, "pmd,rmd,rd,pnscd": 0.8566}}


def describe(w: dict[str, Any], cpu_only: bool = False) -> str:
    cpu = f"{w.get('cpu_model')} ({w.get('cpus_usable')} cores)"
    return f"{w['gpu']} (CUDA, float16 autocast) with {cpu}" if w.get("gpu") and not cpu_only else cpu


def _distill_text(d: dict[str, Any]) -> str:
    """The recipe's distillation options in brief: the weights and the RMD variant."""
    weights = ", ".join(f"{k} {v}" for k, v in d["weights"].items())
    return f"weights {weights}; RMD variant {d['rmd_variant']}"


def _mean_std(vals: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def _ms(vals: list[float]) -> str:
    m, s = _mean_std(vals)
    if m is None:
        return "-"
    return f"{m:.3f}" + (f" ± {s:.3f}" if s is not None else "") + f" (n={len([v for v in vals if v is not None])})"


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over seeds per (kind, model, modules); PNCD-minus-alone per student."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["kind"] == "deploy":
            continue
        key = f"{r['model']}|{r['kind']}|{','.join(r['modules'])}"
        groups.setdefault(key, []).append(r)
    summary = {}
    for key, rs in groups.items():
        d = {k: _mean_std([r.get(k) for r in rs]) for k in ("dice", "voe", "rvd", "val_dice_best")}
        summary[key] = {"n": len(rs), "seeds": [r["seed"] for r in rs], **{f"{k}_mean": v[0] for k, v in d.items()},
                        **{f"{k}_std": v[1] for k, v in d.items()}, "parameters": rs[0].get("parameters"),
                        "torch_ms_b1": statistics.median(r["torch_ms_b1"] for r in rs)}
    deltas = {}
    for st in STUDENTS:
        alone = {r["seed"]: r["dice"] for r in rows if r["model"] == st and r["kind"] == "alone"}
        pncd = {r["seed"]: r["dice"] for r in rows if r["model"] == st and r["kind"] == "pncd"}
        paired = [pncd[s] - alone[s] for s in sorted(set(alone) & set(pncd))]
        if paired:
            m, s = _mean_std(paired)
            deltas[st] = {"paired_seeds": sorted(set(alone) & set(pncd)), "dice_delta_per_seed": paired, "mean": m, "std": s}
    return {"groups": summary, "pncd_minus_alone": deltas}


def render_markdown(doc: dict[str, Any]) -> str:
    rows, summ = doc["rows"], doc["summary"]
    r = doc["recipe"]
    by = lambda kind, model, mods=(): [x for x in rows if x["kind"] == kind and x["model"] == model and tuple(x["modules"]) == tuple(mods)]  # noqa: E731
    col = lambda rs, k: _ms([x.get(k) for x in rs])  # noqa: E731
    # Rows say where they were trained (older rows do not: then the machine that wrote the tables).
    trained = [x.get("trained_on") or doc["machine"] for x in rows if x["kind"] != "deploy"] or [doc["machine"]]
    machines = list(dict.fromkeys(describe(w) for w in trained))
    gpu = any(w.get("gpu") for w in trained)
    out = [f"# Reference results on LGG FLAIR ({'GPU' if gpu else 'CPU'}-trained, {r['size']}x{r['size']} recipe)", "",
           f"Recipe: {r['size']}x{r['size']}, batch {r['batch']}, {r['epochs']} epochs x {r['steps_per_epoch'] or 'all'} steps "
           f"(teachers {r['teacher_epochs']} epochs), lesion fraction {r['lesion_fraction']}, seeds {list(r['seeds'])}; "
           f"PNCD options: {_distill_text(r['distill'])}. Test split, per-patient Dice/VOE/RVD (mean ± std over seeds, "
           f"n = seeds finished). Trained on: {'; '.join(machines)}.", "",
           "torch ms (b1): median eager latency at batch 1, timed right after the row's training while other grid "
           "jobs may share the machine: a rough size indicator; the deployment tables compare latencies side by side.", "",
           f"Command: `{doc['command']}`", "", f"Status: {doc['status']}", "",
           "## Teachers and students (Table 1)", "",
           "| network | params (M) | torch ms (b1) | alone Dice | + PNCD Dice | PNCD − alone (paired by seed) | paper alone / + PNCD |",
           "|---|---|---|---|---|---|---|"]
    for m in (*TEACHERS, *STUDENTS):
        kind = "teacher" if m in TEACHERS else "alone"
        alone, pncd = by(kind, m), by("pncd", m, SINGLES)
        if not alone and not pncd:
            out.append(f"| {m} | - | - | not run yet | | | |")
            continue
        any_row = (alone or pncd)[0]
        delta = summ["pncd_minus_alone"].get(m)
        dtxt = "-" if not delta else (f"{delta['mean']:+.3f}" + (f" ± {delta['std']:.3f}" if delta["std"] is not None else "")
                                      + f" (per seed {', '.join(f'{v:+.3f}' for v in delta['dice_delta_per_seed'])}; PNCD ahead in "
                                         f"{sum(v > 0 for v in delta['dice_delta_per_seed'])} of {len(delta['dice_delta_per_seed'])})")
        paper = PAPER.get(m)
        ptxt = f"{paper:.4f}" if isinstance(paper, float) else (f"{paper[0]:.4f} / {paper[1]:.4f}" if paper else "-")
        out.append(f"| {m} | {any_row['parameters'] / 1e6:.2f} | {any_row['torch_ms_b1']:.1f} | {col(alone, 'dice')} | "
                   f"{col(pncd, 'dice') if m in STUDENTS else ''} | {dtxt} | {ptxt} |")
    out += ["", "VOE and RVD of the same rows:", "", "| row | VOE | RVD | best val Dice |", "|---|---|---|---|"]
    for m in (*TEACHERS, *STUDENTS):
        for kind, mods in ((("teacher" if m in TEACHERS else "alone"), ()), ("pncd", SINGLES)):
            rs = by(kind, m, mods)
            if rs:
                out.append(f"| {m} {'+ PNCD' if kind == 'pncd' else 'alone'} | {col(rs, 'voe')} | {col(rs, 'rvd')} | {col(rs, 'val_dice_best')} |")
    out += ["", "## ENet ablation (Table 3)", "", "| modules | Dice | VOE | RVD | paper Dice |", "|---|---|---|---|---|"]
    for mods in [(), *[(m,) for m in SINGLES], SINGLES]:
        rs = by("alone", "enet") if not mods else by("ablation" if len(mods) == 1 else "pncd", "enet", mods)
        paper = PAPER["enet"][0] if not mods else PAPER["ablation"].get(",".join(mods))
        out.append(f"| {'+'.join(mods) or 'none (ENet alone)'} | {col(rs, 'dice')} | {col(rs, 'voe')} | {col(rs, 'rvd')} | {paper:.4f} |")
    out += ["", "## Deployment (distilled students, CPU, batch 1)", ""]
    deploys = [x for x in rows if x["kind"] == "deploy"]
    if not deploys:
        out.append("Not run yet.")
    for d in deploys:
        out += [f"### {d['model']} (from `{Path(d['source_run']).name}`, {d.get('chosen_by', 'seed ' + str(d['seed']))})", "",
                f"Timed on the CPU: {describe(d.get('benchmarked_on') or doc['machine'], cpu_only=True)}.", "",
                "| artifact | median ms | speed-up vs torch | Dice | % of torch Dice | VOE | RVD |", "|---|---|---|---|---|---|---|"]
        f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        for a in d["artifacts"]:
            out.append(f"| {a['artifact']} | {f(a['median_ms_b1'], '.2f')} | {f(a['speedup_vs_torch'], '.2f')} | {f(a['dice'], '.4f')} | "
                       f"{f(None if a['dice_ratio_to_torch'] is None else 100 * a['dice_ratio_to_torch'], '.1f')} | "
                       f"{f(a['voe'], '.4f')} | {f(a['rvd'], '.4f')} |")
        for k, v in d["export_failures"].items():
            out.append(f"\nExport {k} failed and was left out: {v}")
        out.append("")
    return "\n".join(out) + "\n"
