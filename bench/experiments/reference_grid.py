"""The reference-results grid on real MRI: the paper's Tables 1-3 at CPU scale, plus deployment.

One command trains and scores every row with one fixed recipe, then exports and benchmarks
each distilled student; it resumes where it stopped (a scored row is skipped, an unfinished
training run continues from its last epoch) and rewrites the tables after every row, so an
interrupted grid still leaves honest partial tables.

    python bench/experiments/reference_grid.py --data path/to/lgg-flair --work runs/grid
    python bench/experiments/reference_grid.py --data path/to/lgg-flair --work runs/grid --full   # a GPU
    python bench/experiments/reference_grid.py ... --only 'enet-*'          # a subset of jobs (shell patterns)
    python bench/experiments/reference_grid.py ... --list                   # the jobs, in order, and their state

Rows (each student row with every seed of --seeds; teachers with the first seed):
  1. teachers trained alone: DCSAU-Net, U-Net
  2. students alone: ENet, MobileNetV2, ResNet-18
  3. students with PNCD from the DCSAU-Net teacher (Table 1)
  4. the ENet ablation: PMD, RMD, RD, PNSCD alone (all four = row 3's ENet) (Table 3)
  5. deployment: each distilled student (the seed with the best validation Dice) exported
     (OpenVINO FP32/FP16/INT8, ONNX Runtime FP32/INT8) and benchmarked on this machine against
     its torch reference
Jobs run in an order that makes a partial grid useful: the DCSAU-Net teacher, ENet alone and with
PNCD for each seed, ENet's deployment, the ENet ablation, the other students, U-Net, the other
deployments. Two runners may share a grid (e.g. --only '*-s0' and --only '*-s1'): every job
writes its own files.

Each training job runs :func:`pncd.training.run.train` or :func:`pncd.distill.run.distill` in a spawned
child process (its own threads and memory; a crash ends the job, not the grid), its output in
WORK/logs/<job>.log; exports and benchmarks run in this process (:func:`pncd.export.pipeline.export_run`,
:func:`pncd.bench.pipeline.run`).

Outputs: WORK/runs/<job> (training runs), WORK/rows/<job>.json (a scored row), WORK/deploy/
(exports and bench reports), and in --results (default bench/results/lgg-cpu): grid.json (machine,
versions, the exact command, the recipe, every row and the per-seed summaries) and grid.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from grid_tables import PAPER, SINGLES, STUDENTS, TEACHERS, describe, render_markdown, summarise  # noqa: F401

SCHEMA = "pncd.grid/1"
EXPORTS = (("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"))


def _distill_options(**kw: Any) -> Any:
    from pncd.distill.options import DistillOptions

    return DistillOptions(**kw)


@dataclass
class Recipe:
    size: int = 128
    batch: int = 8
    epochs: int = 6
    teacher_epochs: int = 6
    steps_per_epoch: int | None = 60  # None: one pass over the training slices per epoch
    lesion_fraction: float = 0.5
    seeds: tuple[int, ...] = (0, 1)
    # PNCD at CPU scale: EMKD's RMD and smaller feature-term weights. With the paper's weights
    # (0.1/0.9/0.9/0.9) RMD and PNSCD send 2-28x Loss_seg's gradient into the student, nearly
    # orthogonal to it (bench/experiments/distill_gradients.py), and a 360-step ENet never learns to segment.
    distill: Any = field(default_factory=lambda: _distill_options(rmd_variant="emkd", weights={
        "pmd": 0.1, "rmd": 0.1, "rd": 0.3, "pnscd": 0.1}))  # a pncd.distill.options.DistillOptions
    calib_size: int = 128
    bench_iters: int = 100
    threads: int | None = None

    @classmethod
    def full(cls) -> "Recipe":
        """The GPU recipe: the paper's schedule at 256x256 (its 512x512 does not fit the data set)."""
        return cls(size=256, epochs=100, teacher_epochs=100, steps_per_epoch=None, lesion_fraction=0.0, seeds=(0, 1, 2))

    def train_options(self, seed: int, epochs: int) -> Any:
        """The training loop's options of one job (gradient clipping: the command's default)."""
        from pncd.options import TrainOptions

        return TrainOptions(epochs=epochs, batch=self.batch, seed=seed, lesion_fraction=self.lesion_fraction,
                            steps_per_epoch=self.steps_per_epoch or None)


@dataclass
class Job:
    name: str
    kind: str  # teacher | alone | pncd | ablation | deploy
    model: str
    seed: int = 0
    modules: tuple[str, ...] = ()
    needs: list[str] = field(default_factory=list)


def _deploy_job(student: str, recipe: Recipe) -> Job:
    """Deployment of the distilled student: needs every seed's PNCD run, deploys the one with the
    best validation Dice (chosen on val, never on test)."""
    return Job(f"deploy-{student}", "deploy", student, needs=[f"{student}-pncd-s{s}" for s in recipe.seeds])


def jobs(recipe: Recipe) -> list[Job]:
    s0 = recipe.seeds[0]
    teacher = f"dcsaunet-s{s0}"
    out = [Job(teacher, "teacher", "dcsaunet", s0)]
    for seed in recipe.seeds:
        out += [Job(f"enet-alone-s{seed}", "alone", "enet", seed),
                Job(f"enet-pncd-s{seed}", "pncd", "enet", seed, SINGLES, [teacher])]
    out.append(_deploy_job("enet", recipe))
    for seed in recipe.seeds:
        out += [Job(f"enet-{m}-s{seed}", "ablation", "enet", seed, (m,), [teacher]) for m in SINGLES]
    for seed in recipe.seeds:
        for st in STUDENTS[1:]:
            out += [Job(f"{st}-alone-s{seed}", "alone", st, seed), Job(f"{st}-pncd-s{seed}", "pncd", st, seed, SINGLES, [teacher])]
    out.append(Job(f"unet-s{s0}", "teacher", "unet", s0))
    out += [_deploy_job(st, recipe) for st in STUDENTS[1:]]
    return out


# ---------------------------------------------------------------------------------------------


def _pncd(args: list[str], log: Path) -> None:
    """Run one pncd command in a child process (its own threads and memory), logging to ``log``.
    The grid itself calls typed functions (:func:`in_child`); lgg_distill.py, whose running
    experiment must stay comparable, still calls this."""
    cmd = [sys.executable, "-m", "pncd", *args]
    print("  $ pncd " + " ".join(shlex.quote(a) for a in args), flush=True)
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(shlex.quote(a) for a in cmd)}\n")
        fh.flush()
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"pncd {args[0]} failed (exit {rc}): {tail[0]}  (full log: {log})")


def _resume_flag(run: Path) -> list[str]:
    if (run / "last_state.pt").is_file():
        return ["--resume"]
    return ["--force"] if run.exists() else []


def _torch_latency_ms(model: Any, size: int, channels: int, iters: int = 30) -> float:
    import numpy as np
    import torch

    from pncd.bench.latency import timed_loop

    model.eval()
    x = np.random.default_rng(0).standard_normal((1, channels, size, size), dtype=np.float32)
    with torch.inference_mode():
        raw = timed_loop(lambda a: model(torch.from_numpy(a)), x, warmup=5, iters=iters, duration=0.0)
    return statistics.median(raw["end_to_end_ms"])


def _epoch_rows(run: Path) -> list[dict[str, Any]]:
    """The per-epoch rows of a run's log.jsonl (none when the run has no best checkpoint yet)."""
    import json

    log = run / "log.jsonl"
    if not (run / "best.safetensors").is_file() or not log.is_file():
        return []
    return [row for row in map(json.loads, log.read_text().splitlines()) if row.get("type") == "epoch"]


def where() -> dict[str, Any]:
    """The machine a row was trained (or a deployment timed) on, in brief."""
    from pncd.bench.machine import host_machine

    m = host_machine()
    return {k: m.get(k) for k in ("gpu", "cpu_model", "cpus_usable")}


def score_row(job: Job, run: Path, recipe: Recipe) -> dict[str, Any]:
    from pncd.checkpoint import load_model
    from pncd.apps.ablate import score_run

    model, cfg = load_model(run)
    res = score_run(run, "test", loaded=(model, cfg))
    epochs = _epoch_rows(run)
    return {"job": job.name, "kind": job.kind, "model": job.model, "seed": job.seed, "modules": list(job.modules),
            "val_dice_best": max((e.get("val_dice") or 0.0) for e in epochs) if epochs else None,
            "epochs_run": len(epochs), "train_seconds": sum(e.get("seconds", 0.0) for e in epochs),
            "torch_ms_b1": _torch_latency_ms(model, recipe.size, int(cfg["data"]["channels"])), "trained_on": where(), **res}


def run_options(job: Job, work: Path, data: str, recipe: Recipe) -> Any:
    """The typed options of a training job: a TrainRun (teachers, students alone) or a DistillRun."""
    from pncd.distill.options import DistillRun
    from pncd.options import DataOptions, TrainRun

    run = work / "runs" / job.name
    epochs = recipe.teacher_epochs if job.kind == "teacher" else recipe.epochs
    again = {"resume": True} if (run / "last_state.pt").is_file() else {"force": run.exists()}
    common: dict[str, Any] = {"out": run, "data": DataOptions(data=data, size=recipe.size), "threads": recipe.threads,
                              **again}
    if job.kind in ("teacher", "alone"):
        return TrainRun(model=job.model, train=recipe.train_options(job.seed, epochs), **common)
    return DistillRun(teacher=str(work / "runs" / job.needs[0]), student=job.model,
                      distill=replace(recipe.distill, modules=job.modules),
                      train=recipe.train_options(job.seed, epochs), **common)


def in_child(opts: Any, log: Path) -> None:
    """``train(opts)`` or ``distill(opts)`` in a spawned child process, its output appended to ``log``.

    A child rather than this process: each job gets its own torch threads and memory (a GPU's
    too), and a job that crashes or runs out of memory ends its process, not the grid."""
    import json
    import multiprocessing

    kind = "train" if hasattr(opts, "model") else "distill"
    print(f"  {kind} {getattr(opts, 'model', None) or opts.student} -> {opts.out}", flush=True)
    with open(log, "a") as fh:
        fh.write(f"\n# {kind}: {json.dumps(opts.params(), default=str)}\n")
    child = multiprocessing.get_context("spawn").Process(target=_child, args=(kind, opts, str(log)))
    child.start()
    child.join()
    if child.exitcode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"pncd {kind} failed (exit {child.exitcode}): {tail[0]}  (full log: {log})")


def _child(kind: str, opts: Any, log: str) -> None:
    """The child of :func:`in_child`: stdout and stderr go to ``log``; a PncdError is one line there."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from pncd.errors import PncdError
    from pncd.runtime import apply_threads

    apply_threads(opts.threads)  # as pncd train and distill do: --threads, else the physical cores
    try:
        if kind == "train":
            from pncd.training.run import train

            train(opts)
        else:
            from pncd.distill.run import distill

            distill(opts)
    except PncdError as e:
        print(f"Error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def run_training_job(job: Job, work: Path, data: str, recipe: Recipe) -> dict[str, Any]:
    run = work / "runs" / job.name
    epochs = recipe.teacher_epochs if job.kind == "teacher" else recipe.epochs
    if len(_epoch_rows(run)) >= epochs:
        print(f"  {run} finished training already; scoring it", flush=True)
    else:
        in_child(run_options(job, work, data, recipe), work / "logs" / f"{job.name}.log")
    return score_row(job, run, recipe)


def run_deploy_job(job: Job, work: Path, recipe: Recipe) -> dict[str, Any]:
    from pncd.bench.options import BenchOptions
    from pncd.bench.pipeline import run as run_bench
    from pncd.errors import PncdError
    from pncd.export.pipeline import ExportOptions, export_run
    from pncd.io import read_json

    cands = [read_json(work / "rows" / f"{n}.json") for n in job.needs]
    best = max(cands, key=lambda r: r.get("val_dice_best") or -1.0)
    run = work / "runs" / best["job"]
    print(f"  deploying {best['job']} (best validation Dice {best.get('val_dice_best', 0):.4f} of {', '.join(job.needs)})", flush=True)
    artifacts, failures = [], {}
    for target, precision in EXPORTS:
        dest = work / "deploy" / best["job"] / f"{target}-{precision}"
        if not (dest / "manifest.json").is_file():
            try:
                export_run(run, ExportOptions(target=target, precision=precision, out=str(dest), calib_size=recipe.calib_size, force=True),
                           log=lambda m: print("   ", m, flush=True))
            except PncdError as e:
                failures[f"{target}:{precision}"] = str(e)
                print(f"  export {target} {precision} failed, left out: {e}", flush=True)
                continue
        artifacts.append(dest)
    report_dir = work / "deploy" / best["job"] / "report"
    report = run_bench(artifacts, BenchOptions(split="test", out=report_dir, force=True, iters=recipe.bench_iters,
                                               threads=recipe.threads), command=f"reference_grid deploy {job.model}")
    by_id = {e["id"]: e for e in report.entries}
    rows = []
    for e in report.entries:
        ref = by_id.get(e.get("ref_id")) or e
        speedup = ref["latency_ms_median"] / e["latency_ms_median"] if e.get("latency_ms_median") and ref.get("latency_ms_median") else None
        rows.append({"artifact": e["name"], "runtime": e.get("runtime"), "precision": e.get("precision"),
                     "median_ms_b1": e.get("latency_ms_median"), "speedup_vs_torch": speedup, "dice": e.get("dice"),
                     "dice_ratio_to_torch": e.get("dice_rel", 1.0 if e is ref else None), "voe": e.get("voe"), "rvd": e.get("rvd")})
    return {"job": job.name, "kind": "deploy", "model": job.model, "seed": best["seed"], "source_run": str(run),
            "chosen_by": "best validation Dice among the PNCD runs " + ", ".join(job.needs),
            "report": str(report_dir), "benchmarked_on": where(), "export_failures": failures, "artifacts": rows}


# ---------------------------------------------------------------------------------------------


def write_tables(results: Path, work: Path, recipe: Recipe, command: str, all_jobs: list[Job]) -> dict[str, Any]:
    from pncd.bench.machine import host_machine
    from pncd.io import read_json, versions, write_json, write_text

    rows = [read_json(work / "rows" / f"{j.name}.json") for j in all_jobs if (work / "rows" / f"{j.name}.json").is_file()]
    done = {r["job"] for r in rows}
    todo = [j.name for j in all_jobs if j.name not in done]
    doc = {"schema": SCHEMA, "command": command, "recipe": asdict(recipe), "machine": host_machine(), "versions": versions(),
           "status": "complete" if not todo else f"partial: {len(done)} of {len(all_jobs)} jobs done; not yet run: {', '.join(todo)}",
           "rows": rows, "paper": PAPER}
    doc["summary"] = summarise(rows)
    results.mkdir(parents=True, exist_ok=True)
    write_json(results / "grid.json", doc)
    write_text(results / "grid.md", render_markdown(doc))
    return doc


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="data set directory (e.g. path/to/lgg-flair)")
    ap.add_argument("--work", required=True, help="directory for runs, scored rows and exports (resumable)")
    ap.add_argument("--results", default="bench/results/lgg-cpu", help="where grid.json and grid.md go")
    ap.add_argument("--full", action="store_true", help="the GPU recipe: 256x256, 100 epochs, seeds 0,1,2")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0,1; --full: 0,1,2)")
    for opt, typ in (("size", int), ("batch", int), ("epochs", int), ("teacher-epochs", int), ("steps-per-epoch", int), ("calib-size", int),
                     ("bench-iters", int)):
        ap.add_argument(f"--{opt}", type=typ, default=None, help=f"override the recipe's {opt} (smaller grids for a try-out)")
    ap.add_argument("--only", action="append", default=[], help="run only jobs matching this pattern (repeatable)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of every training process (default: the physical cores)")
    ap.add_argument("--list", action="store_true", help="list the jobs and their state, run nothing")
    ap.add_argument("--tables-only", action="store_true",
                    help="rewrite grid.json and grid.md from the rows in WORK and run nothing (after parallel runners, see bench/experiments/grid_gpu.sh)")
    ap.add_argument("--command", default=None, help="the command to record in grid.json (default: this one)")
    a = ap.parse_args(argv)
    recipe = Recipe.full() if a.full else Recipe()
    if a.seeds:
        recipe.seeds = tuple(int(s) for s in a.seeds.split(","))
    recipe.threads = a.threads
    for key in ("size", "batch", "epochs", "teacher_epochs", "steps_per_epoch", "calib_size", "bench_iters"):
        if getattr(a, key) is not None:
            setattr(recipe, key, getattr(a, key))
    if a.threads:
        os.environ["OMP_NUM_THREADS"] = str(a.threads)
    if not Path(a.data).is_dir():
        raise SystemExit(f"--data {a.data}: no such directory")
    data = str(Path(a.data).resolve())
    work, results = Path(a.work), Path(a.results)
    for sub in ("runs", "rows", "logs", "deploy"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    all_jobs = jobs(recipe)
    command = a.command or "python bench/experiments/reference_grid.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    if a.tables_only:
        doc = write_tables(results, work, recipe, command, all_jobs)
        print(f"tables: {results / 'grid.md'} ({doc['status']})")
        return
    selected = [j for j in all_jobs if not a.only or any(fnmatch.fnmatch(j.name, p) for p in a.only)]
    if a.list:
        for j in all_jobs:
            state = "done" if (work / "rows" / f"{j.name}.json").is_file() else ("started" if (work / "runs" / j.name).exists() else "todo")
            print(f"{j.name:24s} {j.kind:9s} {state}{'' if j in selected else '  (not selected)'}")
        return
    from pncd.io import write_json

    for i, job in enumerate(selected, 1):
        row = work / "rows" / f"{job.name}.json"
        if row.is_file():
            print(f"[{i}/{len(selected)}] {job.name}: done already", flush=True)
            continue
        missing = [n for n in job.needs if not (work / "rows" / f"{n}.json").is_file()]
        if missing:
            print(f"[{i}/{len(selected)}] {job.name}: skipped, needs {', '.join(missing)} first", flush=True)
            continue
        print(f"[{i}/{len(selected)}] {job.name} ({job.kind}, {job.model}, seed {job.seed})", flush=True)
        t0 = time.time()
        res = run_deploy_job(job, work, recipe) if job.kind == "deploy" else run_training_job(job, work, data, recipe)
        res["wall_seconds"] = time.time() - t0
        write_json(row, res)
        write_tables(results, work, recipe, command, all_jobs)
    doc = write_tables(results, work, recipe, command, all_jobs)
    print(f"tables: {results / 'grid.md'} ({doc['status']})")


if __name__ == "__main__":
    main()
