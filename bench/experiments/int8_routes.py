"""INT8 that keeps the Dice? Three routes per student, two CPU runtimes, one bench per student.

For every student run (a float network trained on LGG FLAIR):

- ``ptq``: ``pncd export --precision int8`` with its defaults (post-training, 128 calibration
  images, the first layers in float);
- ``ptq-sensitivity``: the same with ``--keep-float auto`` (the fewest most sensitive blocks
  kept in float that bring INT8 within ``--max-dice-drop`` on the validation split);
- ``qat``: ``pncd qat`` (NNCF quantization-aware training distilled by PMD from the float
  student itself), then ``pncd export --precision int8`` of that run;

each exported for OpenVINO, ONNX Runtime and TensorRT (its symmetric QDQ ONNX, which this CPU
machine runs on ONNX Runtime: TensorRT needs an NVIDIA GPU), then every artifact of the student and the float
student are benched in ONE ``pncd bench`` run on the test split (latencies side by side, one
thread each). Dice kept = artifact Dice / float student Dice (per-patient mean); its interval
is a paired bootstrap over patients of the Dice difference to the float student; speed-up =
float student's torch median latency / artifact's median latency.

    python bench/experiments/int8_routes.py --data path/to/lgg-flair \\
        --student enet=runs/lgg-distill/runs/enet-pncd-s0 \\
        --student mobilenetv2=runs/lgg-distill/runs/mobilenetv2-alone-s0 --work runs/int8

``--no-strict`` exports an artifact even where the export's own check (INT8 keeps 99% of the FP32
Dice on the validation split) refuses it, to measure a route that misses it; the table shows that
check's ratio beside the test-split one.

Resumable: an artifact or QAT run that exists is reused (delete it to redo it); rows of students
not named in this call are kept in summary.json. Writes
``--results`` (default bench/results/int8): summary.json ({"rows": [{student, runtime, route,
dice_kept, speedup_vs_torch, ...}]} for OpenVINO and ONNX Runtime, and the same rows of the
TensorRT ONNX under "tensorrt_onnx_on_onnxruntime"), results.md, and each student's bench report.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from reference_grid import _pncd as pncd  # one pncd command in a child process, logged

RUNTIMES = ("openvino", "onnxruntime", "tensorrt")  # tensorrt: its QDQ ONNX, benched on ONNX Runtime here
SUMMARY_RUNTIMES = ("openvino", "onnxruntime")  # summary.json's "rows"
ROUTES = ("ptq", "ptq-sensitivity", "qat")
FLOAT_REFERENCE = "fp32"  # an FP32 export of the float student, benched only to bring its torch reference


def artifacts(name: str, run: Path, work: Path, data: str, routes: list[str], qat_args: list[str],
              log: Path, max_drop: float = 0.003, strict: bool = True) -> dict[tuple[str, str], Path]:
    """Build (or reuse) every (runtime, route) artifact of one student."""
    out: dict[tuple[str, str], Path] = {}
    for route in routes:
        source = run
        extra: list[str] = []
        if route == "qat":
            source = work / name / "qat-run"
            if not (source / "config.json").is_file():
                pncd(["qat", str(run), "--out", str(source), "--data", data, "--threads", "1", *qat_args], log)
        elif route == "ptq-sensitivity":
            # 0.003 absolute at a Dice near 0.7 is about a 0.5% relative drop (the target for OpenVINO INT8)
            extra = ["--keep-float", "auto", "--sensitivity", "--max-dice-drop", str(max_drop)]
        for rt in RUNTIMES:
            d = work / name / f"{rt}-{route}"
            if not (d / "manifest.json").is_file():
                pncd(["export", str(source), "--target", rt, "--precision", "int8", "--data", data,
                      "--out", str(d), "--force", *extra, *([] if strict else ["--no-strict"])], log)
            out[(rt, route)] = d
    if routes == ["qat"]:  # no artifact of the float student itself: an FP32 one brings its torch reference
        d = work / name / "onnxruntime-fp32"  # into the bench (its latency and Dice side by side with the rest)
        if not (d / "manifest.json").is_file():
            pncd(["export", str(run), "--target", "onnxruntime", "--precision", "fp32", "--data", data,
                  "--out", str(d), "--force"], log)
        out[("onnxruntime", FLOAT_REFERENCE)] = d
    return out


def bench(name: str, arts: dict[tuple[str, str], Path], work: Path, data: str, log: Path) -> dict[str, Any]:
    report = work / name / "bench"
    done = json.loads((report / "report.json").read_text()) if (report / "report.json").is_file() else {"entries": []}
    benched = {Path(e["artifact_dir"]).resolve() for e in done["entries"] if e.get("artifact_dir")}
    stale = any((d / "manifest.json").stat().st_mtime > (report / "report.json").stat().st_mtime
                for d in arts.values()) if benched else True  # an artifact rebuilt since the report
    if stale or not {d.resolve() for d in arts.values()} <= benched:  # all side by side in one run
        pncd(["bench", *map(str, arts.values()), "--data", data, "--split", "test", "--out", str(report),
              "--threads", "1", "--force"], log)
    return json.loads((report / "report.json").read_text())


def rows_for(name: str, run: Path, arts: dict[tuple[str, str], Path], report: dict[str, Any]) -> list[dict[str, Any]]:
    """Dice kept against the float student (not the QAT run's own float weights) and speed-up."""
    from pncd.bench.stats import paired_bootstrap

    entries = report["entries"]
    ref = next(e for e in entries if e["kind"] == "reference" and Path(e["source_run"]).resolve() == run.resolve())
    ref_cases = {c["case"]: c["dice"] for c in report["per_case"][ref["id"]]}
    by_dir = {Path(e["artifact_dir"]).resolve(): e for e in entries if e.get("artifact_dir")}
    out = []
    for (rt, route), d in arts.items():
        if route == FLOAT_REFERENCE:
            continue
        e = by_dir[d.resolve()]
        cases = {c["case"]: c["dice"] for c in report["per_case"][e["id"]]}
        keys = sorted(ref_cases)
        ci = paired_bootstrap([cases[k] for k in keys], [ref_cases[k] for k in keys])
        man = json.loads((d / "manifest.json").read_text())
        out.append({
            "student": name, "runtime": rt, "route": route,
            "dice_kept": e["dice"] / ref["dice"], "speedup_vs_torch": ref["latency_ms_median"] / e["latency_ms_median"],
            "dice": e["dice"], "float_dice": ref["dice"], "dice_diff_ci95": [ci["lo"], ci["hi"]],
            "latency_ms_median": e["latency_ms_median"], "torch_latency_ms_median": ref["latency_ms_median"],
            "computes_in": e.get("compute_precision"),
            "kept_float": (man["build"].get("keep_float") or {}).get("layers"),
            "weight_bits": (man["build"].get("quantization") or {}).get("weight_bits", 8),
            # the export's own check on the validation split (INT8 Dice / FP32 Dice; refused below 99%
            # unless exported with --no-strict)
            "val_dice_kept": (man.get("parity") or {}).get("dice_ratio"),
        })
    return out


def render(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    commands = list(dict.fromkeys(r["command"] for r in rows if r.get("command")))
    lines = ["# INT8 routes on LGG FLAIR (test split, per-patient Dice)", "",
             *[f"Command: `{c}`" for c in commands], "",
             f"Machine: {machine.get('cpu_isa') or machine.get('cpu_model')}, one thread per runtime; latencies "
             "measured side by side in one `pncd bench` run per student.", "",
             "| student | runtime | route | weights | Dice | float Dice | Dice kept | 95% CI of ΔDice | val Dice kept (export check) "
             "| median ms | torch ms | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    students = list(dict.fromkeys(r["student"] for r in rows))
    order = sorted(rows, key=lambda r: (students.index(r["student"]), RUNTIMES.index(r["runtime"]), ROUTES.index(r["route"])))
    for r in order:
        lo, hi = r["dice_diff_ci95"]
        runtime = "tensorrt ONNX on onnxruntime" if r["runtime"] == "tensorrt" else r["runtime"]
        lines.append(f"| {r['student']} | {runtime} | {r['route']} | {r.get('weight_bits', 8)}-bit | {r['dice']:.4f} | "
                     f"{r['float_dice']:.4f} | "
                     f"{r['dice_kept']:.2%} | [{lo:+.4f}, {hi:+.4f}] | {_pct(r.get('val_dice_kept'))} | "
                     f"{r['latency_ms_median']:.1f} | "
                     f"{r['torch_latency_ms_median']:.1f} | {r['speedup_vs_torch']:.1f}x |")
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--student", action="append", required=True, metavar="NAME=RUN")
    ap.add_argument("--work", type=Path, default=Path("runs/int8"))
    ap.add_argument("--results", type=Path, default=Path("bench/results/int8"))
    ap.add_argument("--routes", default=",".join(ROUTES))
    ap.add_argument("--qat-steps", type=int, default=300)
    ap.add_argument("--qat-lr", type=float, default=1e-5)
    ap.add_argument("--max-dice-drop", type=float, default=0.003,
                    help="ptq-sensitivity: the absolute validation Dice drop --keep-float auto may accept")
    ap.add_argument("--no-strict", action="store_true",
                    help="export even where the export's own parity check (99%% of the FP32 Dice on the "
                         "validation split) refuses: to measure a route that misses it; the manifest records it")
    a = ap.parse_args(argv)
    routes = [r for r in a.routes.split(",") if r]
    from pncd.io import write_json, write_text

    a.results.mkdir(parents=True, exist_ok=True)
    rows, machine = [], {}
    for item in a.student:
        name, _, run = item.partition("=")
        (a.work / name).mkdir(parents=True, exist_ok=True)
        log = a.work / name / "commands.log"
        print(f"[{name}] {run}", flush=True)
        arts = artifacts(name, Path(run), a.work, a.data, routes,
                         ["--steps", str(a.qat_steps), "--lr", str(a.qat_lr)], log, a.max_dice_drop,
                         strict=not a.no_strict)
        report = bench(name, arts, a.work, a.data, log)
        machine = report["machine"]
        rows += rows_for(name, Path(run), arts, report)
        shutil.copyfile(a.work / name / "bench" / "report.md", a.results / f"{name}-bench.md")
    command = "python bench/experiments/int8_routes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    done = {(r["student"], r["route"]) for r in rows}
    old = a.results / "summary.json"  # rows of students / routes not run by this call stay (their own command recorded)
    prev = json.loads(old.read_text()) if old.is_file() else {}
    kept = [r for r in prev.get("rows", []) + prev.get("tensorrt_onnx_on_onnxruntime", [])
            if (r["student"], r["route"]) not in done]
    every = kept + [{**r, "command": command} for r in rows]
    rows = [r for r in every if r["runtime"] in SUMMARY_RUNTIMES]
    trt = [r for r in every if r["runtime"] not in SUMMARY_RUNTIMES]
    write_json(a.results / "summary.json", {"rows": rows, "tensorrt_onnx_on_onnxruntime": trt, "machine": machine})
    write_text(a.results / "results.md", render(rows + trt, machine))
    print(render(rows + trt, machine))


if __name__ == "__main__":
    main()
