"""Does distillation help? Each student alone and with the default ``pncd distill``, paired by seed.

On LGG FLAIR: a teacher trained to convergence (a finished run, passed
with --teacher; it is trained beforehand with ``pncd train``), then for every seed and student
two runs with the same recipe, steps and seed: ``pncd train`` (alone) and ``pncd distill`` with
its default options (PNCD). Both share every random stream but the distillation heads' (see
``pncd distill --help``), so the difference per seed is the effect of distillation.

    python bench/experiments/lgg_distill.py --data path/to/lgg-flair \\
        --teacher bench/results/lgg-distill/teacher --work runs/lgg-distill
    python bench/experiments/lgg_distill.py ... --only 'enet-*'      # a subset (shell patterns)
    python bench/experiments/lgg_distill.py ... --list               # the jobs, in order, and their state
    python bench/experiments/lgg_distill.py ... --tables-only        # rewrite the results from finished runs
    python bench/experiments/lgg_distill.py ... --ablation enet:0 --only 'enet-only-*'
        # the single-module ablation: one distillation per module alone (--modules M, its default
        # weight), same seed and recipe, beside that seed's runs alone and with PNCD
    python bench/experiments/lgg_distill.py ... --int8-teacher enet --only 'enet-pncd8-*'
        # PNCD with the teacher quantized to INT8 (--teacher-runtime openvino-int8), every seed,
        # beside the float teacher's PNCD runs: does the cheaper teacher cost the student Dice?
    python bench/experiments/lgg_distill.py ... --cached-teacher enet --only 'enet-pncdc-*'
        # PNCD with the teacher's outputs cached once per slice (--teacher-cache; augmented samples
        # get them flipped and rotated), every seed, beside the live teacher's PNCD runs

Resumable: a scored job is skipped, an unfinished run continues from its last epoch (kill it at
any time). Two runners may share the work folder (e.g. --only '*-s0' and --only '*-s1').
Every child runs with ``--threads`` (default 1). CPU time at 128x128, batch 8, one thread,
1,500 steps: ENet about 8 minutes alone and 12 distilled, MobileNetV2 and ResNet-18 about 20
and 25.

A job scored by an earlier call (in --results' rows.json, which is committed) is not run
again. Outputs: WORK/runs/<job>, WORK/rows/<job>.json (a scored job), and in --results (default
bench/results/lgg-distill): summary.json (per-patient mean test Dice per seed, seeds paired
by position), rows.json (every scored job in full) and results.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STUDENTS = ("enet", "mobilenetv2", "resnet18")


@dataclass
class Recipe:
    size: int = 128
    batch: int = 8
    epochs: int = 15
    steps_per_epoch: int = 100
    lesion_fraction: float = 0.5
    lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2)
    threads: int = 1

    def args(self, seed: int) -> list[str]:
        return ["--size", str(self.size), "--batch", str(self.batch), "--epochs", str(self.epochs),
                "--steps-per-epoch", str(self.steps_per_epoch), "--lesion-fraction", str(self.lesion_fraction),
                "--lr", str(self.lr), "--seed", str(seed), "--threads", str(self.threads)]


@dataclass
class Job:
    name: str
    kind: str  # alone | pncd | only-<module> (the ablation) | pncd8 (PNCD, INT8 teacher) | pncdc (PNCD, cached teacher)
    student: str
    seed: int


def jobs(recipe: Recipe, students: tuple[str, ...]) -> list[Job]:
    """Seed by seed, so that a partial run already gives paired rows for every student."""
    out = []
    for seed in recipe.seeds:
        for st in students:
            out += [Job(f"{st}-alone-s{seed}", "alone", st, seed), Job(f"{st}-pncd-s{seed}", "pncd", st, seed)]
    return out


MODULES = ("pmd", "rmd", "rd", "pnscd")


def ablation_jobs(spec: str | None) -> list[Job]:
    """``STUDENT:SEED`` -> one distillation per module alone."""
    if not spec:
        return []
    st, _, seed = spec.partition(":")
    return [Job(f"{st}-only-{m}-s{int(seed or 0)}", f"only-{m}", st, int(seed or 0)) for m in MODULES]


@dataclass(frozen=True)
class Variant:
    """PNCD run another way, every seed, beside the default PNCD runs (same seed and recipe):
    ``--int8-teacher`` (kind pncd8) and ``--cached-teacher`` (kind pncdc)."""

    flags: tuple[str, ...]  # added to the pncd distill command
    key: str  # in summary.json
    ref: str  # the default run's name in the table (float, live)
    name: str  # this one's (INT8, cached)
    title: str


VARIANTS = {
    "pncd8": Variant(("--teacher-runtime", "openvino-int8"), "int8_teacher", "float", "INT8",
                     "PNCD with the teacher in INT8 (`--teacher-runtime openvino-int8`) beside the float teacher"),
    "pncdc": Variant(("--teacher-cache",), "teacher_cache", "live", "cached",
                     "PNCD with the teacher's outputs cached once per slice (`--teacher-cache`) beside the live teacher"),
}


def variant_jobs(recipe: Recipe, spec: str | None, kind: str) -> list[Job]:
    """``STUDENT[,STUDENT]`` -> PNCD run as variant ``kind``, for every seed."""
    students = [s.strip() for s in (spec or "").split(",") if s.strip()]
    return [Job(f"{st}-{kind}-s{seed}", kind, st, seed) for seed in recipe.seeds for st in students]


def variant_summary(rows: dict[str, dict[str, Any]], recipe: Recipe, spec: str, kind: str) -> dict[str, Any]:
    """Per student: the seeds where PNCD ran both ways, and the test Dice alone, with the default
    PNCD and with the variant (paired by position; keys ``pncd_<ref>``, ``pncd_<name>``)."""
    v = VARIANTS[kind]
    keys = (("alone", "alone"), (f"pncd_{v.ref.lower()}", "pncd"), (f"pncd_{v.name.lower()}", kind))
    out: dict[str, Any] = {}
    for st in (s.strip() for s in spec.split(",") if s.strip()):
        seeds = [s for s in recipe.seeds if all(f"{st}-{k}-s{s}" in rows for k in ("alone", "pncd", kind))]
        out[st] = {"seeds": seeds, **{key: [rows[f"{st}-{k}-s{s}"]["dice"] for s in seeds] for key, k in keys}}
    return out


def render_variant(summary: dict[str, Any], kind: str) -> list[str]:
    v = VARIANTS[kind]
    ref, new = f"pncd_{v.ref.lower()}", f"pncd_{v.name.lower()}"
    lines = ["", f"{v.title} (per-patient test Dice, paired by seed):", "",
             f"| student | seeds | alone | PNCD, {v.ref} teacher | PNCD, {v.name} teacher | {v.name} − {v.ref} (mean ± std) "
             f"| {v.name} − alone | per seed: alone / {v.ref} / {v.name} |",
             "|---|---|---|---|---|---|---|---|"]
    for st, d in summary.items():
        if not d["seeds"]:
            lines.append(f"| {st} | – | – | – | – | – | – | not run yet |")
            continue
        per = ", ".join(f"s{s}: {a:.3f} / {f:.3f} / {q:.3f}" for s, a, f, q in zip(d["seeds"], d["alone"], d[ref], d[new]))
        dv = [y - x for x, y in zip(d[ref], d[new])]
        da = [y - x for x, y in zip(d["alone"], d[new])]
        sd = statistics.stdev(dv) if len(dv) > 1 else 0.0
        lines.append(f"| {st} | {len(dv)} | {statistics.mean(d['alone']):.4f} | {statistics.mean(d[ref]):.4f} | "
                     f"{statistics.mean(d[new]):.4f} | {statistics.mean(dv):+.4f} ± {sd:.4f} | {statistics.mean(da):+.4f} | {per} |")
    return lines


def _epochs(run: Path) -> list[dict[str, Any]]:
    log = run / "log.jsonl"
    if not log.is_file():
        return []
    return [r for r in map(json.loads, log.read_text().splitlines()) if r.get("type") == "epoch"]


def score(run: Path, data: str, split: str) -> dict[str, Any]:
    """Per-patient Dice of a run's best checkpoint on ``split`` (with the run's preprocessing), on
    the GPU where there is one (several runs share a GPU machine's CPU cores)."""
    import torch

    from pncd.apps.ablate import score_run
    from pncd.checkpoint import load_model

    model, cfg = load_model(run)
    cfg = {**cfg, "data": {**cfg["data"], "root": str(Path(data).resolve())}}
    return score_run(run, split, loaded=(model, cfg), device="cuda" if torch.cuda.is_available() else "cpu")


def run_job(job: Job, work: Path, data: str, teacher: Path, recipe: Recipe, log) -> dict[str, Any]:
    from reference_grid import _pncd, _resume_flag, where

    run = work / "runs" / job.name
    logfile = work / "logs" / f"{job.name}.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    if len(_epochs(run)) >= recipe.epochs and (run / "best.safetensors").is_file():
        log(f"  {run} finished training already; scoring it")
    elif job.kind == "alone":
        _pncd(["train", "--model", job.student, "--data", data, "--out", str(run), *recipe.args(job.seed),
               *_resume_flag(run)], logfile)
    else:
        only = ["--modules", job.kind.removeprefix("only-")] if job.kind.startswith("only-") else []
        if job.kind in VARIANTS:
            only = list(VARIANTS[job.kind].flags)
        _pncd(["distill", "--teacher", str(teacher), "--student", job.student, "--data", data, "--out", str(run),
               *recipe.args(job.seed), *only, *_resume_flag(run)], logfile)
    epochs = _epochs(run)
    res = score(run, data, "test")
    cache = (json.loads((run / "config.json").read_text()).get("distill") or {}).get("teacher_cache_info") or {}
    return {"job": job.name, "kind": job.kind, "student": job.student, "seed": job.seed,
            "val_dice_best": max((e.get("val_dice") or 0.0) for e in epochs) if epochs else None,
            "epochs_run": len(epochs), "train_seconds": round(sum(e.get("seconds", 0.0) for e in epochs), 1),
            **({"cache_build_seconds": cache["build_seconds"]} if cache else {}),  # not in train_seconds
            "trained_on": where(), **res}


def summarise(rows: dict[str, dict[str, Any]], teacher: dict[str, Any], recipe: Recipe,
              students: tuple[str, ...], distill: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json: seeds paired by position; a seed appears only when both of its runs are scored.
    ``distill``: the distillation options the PNCD runs recorded (the defaults of their pncd)."""
    out: dict[str, Any] = {"teacher": teacher, "recipe": {**asdict(recipe), "seeds": list(recipe.seeds),
                                                          "distill": distill or "pncd distill defaults"}, "students": {}}
    for st in students:
        seeds = [s for s in recipe.seeds if f"{st}-alone-s{s}" in rows and f"{st}-pncd-s{s}" in rows]
        out["students"][st] = {
            kind: {"seeds": seeds, "test_dice": [rows[f"{st}-{kind}-s{s}"]["dice"] for s in seeds]}
            for kind in ("alone", "pncd")}
    return out


def ablation_summary(rows: dict[str, dict[str, Any]], abl: list[Job]) -> dict[str, Any]:
    """Test Dice of each module alone, beside the same student and seed alone and with PNCD."""
    st, seed = abl[0].student, abl[0].seed
    dice = {name: rows[name]["dice"] if name in rows else None
            for name in (f"{st}-alone-s{seed}", f"{st}-pncd-s{seed}", *(j.name for j in abl))}
    return {"student": st, "seed": seed, "alone": dice[f"{st}-alone-s{seed}"], "pncd": dice[f"{st}-pncd-s{seed}"],
            "only": {j.kind.removeprefix("only-"): dice[j.name] for j in abl}}


def render_ablation(ab: dict[str, Any]) -> list[str]:
    def cell(v: float | None) -> str:
        return "not run yet" if v is None else f"{v:.4f}"

    def delta(v: float | None) -> str:
        return "–" if v is None or ab["alone"] is None else f"{v - ab['alone']:+.4f}"

    lines = ["", f"Single-module ablation ({ab['student']}, seed {ab['seed']}; `--modules M` with its default "
             "weight, everything else as the PNCD runs):", "", "| distillation | test Dice | − alone |", "|---|---|---|",
             f"| none (alone) | {cell(ab['alone'])} | – |"]
    lines += [f"| {m} only | {cell(v)} | {delta(v)} |" for m, v in ab["only"].items()]
    lines.append(f"| all four (PNCD) | {cell(ab['pncd'])} | {delta(ab['pncd'])} |")
    return lines


def render(summary: dict[str, Any], rows: dict[str, dict[str, Any]], command: str) -> str:
    t = summary["teacher"]
    lines = ["# Distillation on LGG FLAIR: each student alone and with the default `pncd distill`", "",
             f"Command: `{command}`", "",
             f"Teacher: {t['model']} (`{t['run']}`), per-patient Dice val {t['val_dice']:.4f}, test {t['test_dice']:.4f}.",
             "", f"Recipe: `{json.dumps(summary['recipe'])}`", "",
             "Per-patient mean test Dice (18 patients); PNCD − alone is paired by seed.", "",
             "| student | seeds | alone | + PNCD | PNCD − alone (mean ± std) | PNCD ahead | per seed: alone / PNCD |",
             "|---|---|---|---|---|---|---|"]
    for st, d in summary["students"].items():
        a, p = d["alone"]["test_dice"], d["pncd"]["test_dice"]
        if not a:
            lines.append(f"| {st} | – | – | – | – | – | not run yet |")
            continue
        diff = [y - x for x, y in zip(a, p)]
        sd = statistics.stdev(diff) if len(diff) > 1 else 0.0
        per = ", ".join(f"s{s}: {x:.3f} / {y:.3f}" for s, x, y in zip(d["alone"]["seeds"], a, p))
        lines.append(f"| {st} | {len(a)} | {statistics.mean(a):.4f} | {statistics.mean(p):.4f} | "
                     f"{statistics.mean(diff):+.4f} ± {sd:.4f} | {sum(x > 0 for x in diff)} of {len(diff)} | {per} |")
    if summary.get("ablation"):
        lines += render_ablation(summary["ablation"])
    for kind, v in VARIANTS.items():
        if summary.get(v.key):
            lines += render_variant(summary[v.key], kind)
    lines += ["", "Every scored run (best checkpoint by val Dice):", "",
              "| job | best val Dice | test Dice | VOE | RVD | epochs | train s | machine |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['val_dice_best']:.4f} | {r['dice']:.4f} | {r.get('voe', float('nan')):.4f} | "
                     f"{r.get('rvd', float('nan')):.4f} | {r['epochs_run']} | {r['train_seconds']:.0f} | "
                     f"{(r.get('trained_on') or {}).get('cpu_model')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", required=True, help="Data set root (LGG FLAIR of Buda et al.: path/to/lgg-flair).")
    ap.add_argument("--teacher", required=True, type=Path, help="A finished teacher run directory.")
    ap.add_argument("--work", type=Path, default=Path("runs/lgg-distill"))
    ap.add_argument("--results", type=Path, default=Path("bench/results/lgg-distill"))
    ap.add_argument("--teacher-as-is", action="store_true",
                    help="Use the teacher's best checkpoint even if its run stopped before its last epoch "
                         "(teacher.json records the epochs it ran).")
    ap.add_argument("--students", default=",".join(STUDENTS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--size", type=int, default=Recipe.size, help="Input size (the CPU experiment: 128).")
    ap.add_argument("--epochs", type=int, default=Recipe.epochs)
    ap.add_argument("--steps-per-epoch", type=int, default=Recipe.steps_per_epoch)
    ap.add_argument("--threads", type=int, default=1, help="Torch threads of each child run.")
    ap.add_argument("--only", action="append", default=[], help="Shell pattern of job names (repeatable).")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--tables-only", action="store_true")
    ap.add_argument("--ablation", default=None, metavar="STUDENT:SEED",
                    help="Add the single-module ablation of one student and seed (e.g. enet:0).")
    ap.add_argument("--int8-teacher", default=None, metavar="STUDENTS",
                    help="Add PNCD runs with the INT8 teacher (--teacher-runtime openvino-int8) for these students, every seed.")
    ap.add_argument("--cached-teacher", default=None, metavar="STUDENTS",
                    help="Add PNCD runs with the teacher's outputs cached (--teacher-cache) for these students, every seed.")
    a = ap.parse_args(argv)

    recipe = Recipe(size=a.size, epochs=a.epochs, steps_per_epoch=a.steps_per_epoch, threads=a.threads,
                    seeds=tuple(int(s) for s in a.seeds.split(",")))
    students = tuple(s.strip() for s in a.students.split(",") if s.strip())
    all_jobs = (jobs(recipe, students) + ablation_jobs(a.ablation) + variant_jobs(recipe, a.int8_teacher, "pncd8")
                + variant_jobs(recipe, a.cached_teacher, "pncdc"))
    todo = [j for j in all_jobs if not a.only or any(fnmatch.fnmatch(j.name, p) for p in a.only)]
    rows_dir = a.work / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    from pncd.io import write_json, write_text

    committed = a.results / "rows.json"  # jobs scored by earlier calls (runs/ is not committed)
    if committed.is_file():
        for name, row in json.loads(committed.read_text()).get("rows", {}).items():
            if not (rows_dir / f"{name}.json").is_file():
                write_json(rows_dir / f"{name}.json", row)
    if a.list:
        for j in all_jobs:
            state = "scored" if (rows_dir / f"{j.name}.json").is_file() else (
                f"{len(_epochs(a.work / 'runs' / j.name))}/{recipe.epochs} epochs")
            print(f"{j.name:<24} {state}{'' if j in todo else '  (not selected)'}")
        return
    import torch

    torch.set_num_threads(a.threads)  # it scores runs: torch's default (every core) starves the runs beside it
    command = " ".join(["python bench/experiments/lgg_distill.py", *(shlex.quote(x) for x in (argv or sys.argv[1:]))])
    teacher_file = rows_dir / "teacher.json"
    # Runs alone need no teacher: they may start while it is still training (--only '*-alone-*');
    # they then write their rows, and the tables wait for a run that has the teacher.
    teacher_ready = (a.teacher / "best.safetensors").is_file() and (
        a.teacher_as_is
        or len(_epochs(a.teacher)) >= json.loads((a.teacher / "config.json").read_text())["options"]["epochs"])
    if not teacher_ready and not teacher_file.is_file():
        needs = [j.name for j in todo if j.kind != "alone"]
        if needs or a.tables_only:
            raise SystemExit(f"{a.teacher}: not a finished teacher run (no best.safetensors, or fewer epochs "
                             f"logged than its config asks; --teacher-as-is takes it anyway); "
                             f"{', '.join(needs) or 'the tables'} need it")
        print(f"teacher {a.teacher} not finished yet: running {len(todo)} job(s) alone, rows only (no tables)")
        teacher = None
    else:
        if not teacher_file.is_file():
            cfg = json.loads((a.teacher / "config.json").read_text())
            val, test = score(a.teacher, a.data, "val"), score(a.teacher, a.data, "test")
            write_json(teacher_file, {"model": cfg["model"]["name"], "run": str(a.teacher), "val_dice": val["dice"],
                                      "test_dice": test["dice"], "epochs_run": len(_epochs(a.teacher)),
                                      "epochs_planned": cfg["options"]["epochs"]})
        teacher = json.loads(teacher_file.read_text())
        print(f"teacher {teacher['model']}: val Dice {teacher['val_dice']:.4f}, test Dice {teacher['test_dice']:.4f}")

    def write_results() -> None:
        if teacher is None:
            return
        rows = {j.name: json.loads((rows_dir / f"{j.name}.json").read_text())
                for j in all_jobs if (rows_dir / f"{j.name}.json").is_file()}
        distill = None
        for j in all_jobs:
            cfg = a.work / "runs" / j.name / "config.json"
            if j.kind == "pncd" and cfg.is_file():
                d = json.loads(cfg.read_text()).get("distill") or {}
                distill = {k: d.get(k) for k in ("modules", "w_pmd", "w_rmd", "w_rd", "w_pnscd", "temperature",
                                                 "rmd_variant", "tau", "pnscd_form", "pnscd_memory", "kd_warmup")}
                distill["clip_grad_norm"] = json.loads(cfg.read_text()).get("options", {}).get("clip_grad_norm")
                break
        summary = summarise(rows, teacher, recipe, students, distill)
        if a.ablation:
            summary["ablation"] = ablation_summary(rows, ablation_jobs(a.ablation))
        for kind, spec in (("pncd8", a.int8_teacher), ("pncdc", a.cached_teacher)):
            if spec:
                summary[VARIANTS[kind].key] = variant_summary(rows, recipe, spec, kind)
        a.results.mkdir(parents=True, exist_ok=True)
        write_json(a.results / "summary.json", summary)
        write_json(a.results / "rows.json", {"command": command, "rows": rows})
        write_text(a.results / "results.md", render(summary, rows, command))

    if not a.tables_only:
        for j in todo:
            if (rows_dir / f"{j.name}.json").is_file():
                continue
            t0 = time.time()
            print(f"[{j.name}]", flush=True)
            row = run_job(j, a.work, a.data, a.teacher, recipe, print)
            write_json(rows_dir / f"{j.name}.json", row)
            print(f"  test Dice {row['dice']:.4f} (best val {row['val_dice_best']:.4f}), {time.time() - t0:.0f} s",
                  flush=True)
            write_results()
    write_results()
    if teacher is not None:
        print(f"results: {a.results / 'results.md'}")


if __name__ == "__main__":
    main()
