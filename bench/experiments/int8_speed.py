"""Is INT8 faster than FP32? Each student, ONNX Runtime and OpenVINO, timed side by side on one thread.

For ENet, MobileNetV2 and ResNet-18 (``--models``), at ``--size`` x ``--size``, batch 1:

1. **speed**: the FP32 ONNX (``pncd.targets.onnx_export.export_onnx``, the export's rewrites
   included) and its FP32 and INT8 artifacts for ``onnxruntime`` and ``openvino``, built by the
   export's own build step (:func:`pncd.export.pipeline.build_target`, ``pncd export``'s defaults,
   INT8 calibrated on ``--calib-size`` training images), except OpenVINO's weight re-rounding
   (``--ov-rounding nearest`` here: the re-rounding changes weight values, not the graph the CPU
   runs, and takes minutes per model at 256x256). The weights are the committed LGG checkpoint of
   the student where one exists (``bench/results/int8/students``), else a seeded random
   initialisation (latency does not depend on the weights). All four runners of a student are
   timed in interleaved rounds (:func:`pncd.bench.interleave.run_rounds`, one thread each); the
   INT8/FP32 speed-up of each runtime is the ratio of the medians with a 95% bootstrap interval
   over rounds (:func:`pncd.bench.interleave.speedup`), and the same from the process CPU time per
   inference (steadier than wall time on a machine shared with other jobs). Each artifact is then
   profiled per node (:mod:`pncd.targets.profiling`).
2. **Dice kept** (students with a committed checkpoint): ``pncd export`` of the checkpoint at its
   own size with every default (the accuracy checks included), FP32 and INT8 per runtime, scored
   on the test split of its data set (``--data``, default: the run's); Dice kept = INT8 Dice /
   FP32 Dice of the same runtime.

Writes ``results.json`` and ``README.md`` into ``--out``. Example::

    python bench/experiments/int8_speed.py --out bench/results/speed
    python bench/experiments/int8_speed.py --models enet --rounds 6 --no-dice --out /tmp/speed
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

STUDENTS = Path(__file__).resolve().parents[1] / "results" / "int8" / "students"
CHECKPOINTS = {"enet": STUDENTS / "enet-pncd-s0", "mobilenetv2": STUDENTS / "mobilenetv2-alone-s0",
               "resnet18": STUDENTS / "resnet18-alone-s0"}
RUNTIMES = ("onnxruntime", "openvino")
GOAL_SPEEDUP, GOAL_DICE = 1.5, 0.995


def _log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def student(name: str, size: int, data_root: str | None) -> tuple[Any, dict[str, Any], str]:
    """(model, data spec dict at ``size``, where its weights came from)."""
    import torch

    from pncd import models

    run = CHECKPOINTS.get(name)
    if run is not None and (run / "best.safetensors").is_file():
        from pncd.checkpoint import load_model

        model, cfg = load_model(run, device="cpu")
        data = {**cfg["data"], "size": size, **({"root": data_root} if data_root else {})}
        return model.eval(), data, f"{run.relative_to(STUDENTS.parents[3])} (trained on LGG at {cfg['data']['size']})"
    from pncd.data import DataSpec

    torch.manual_seed(0)
    why = "no committed checkpoint" if run is None or not run.exists() else "its checkpoint is not committed (>16 MB)"
    return models.create(name).eval(), DataSpec(root=None, size=size).to_dict(), f"random init, seed 0 ({why})"


def build(name: str, model: Any, data: dict[str, Any], size: int, calib_size: int, work: Path) -> dict[str, Path]:
    """{"onnxruntime-fp32": file, ...}: the four artifacts, as pncd export's build step writes them."""
    from pncd.export.calibration import calibration_images
    from pncd.export.pipeline import ExportOptions, build_target
    from pncd.targets.onnx_export import export_onnx

    fp32 = work / f"{name}.onnx"
    export_onnx(model, fp32, int(data.get("channels", 1)), size, size)
    calib = calibration_images(data, calib_size, (size, size), None)
    out: dict[str, Path] = {}
    for rt in RUNTIMES:
        for prec in ("fp32", "int8"):
            d = work / f"{name}-{rt}-{prec}"
            d.mkdir()
            opts = ExportOptions(target=rt, precision=prec, out=str(d),
                                 ov_rounding="nearest" if rt == "openvino" and prec == "int8" else None)
            t0 = time.perf_counter()
            built = build_target(opts, fp32, d, calib if prec == "int8" else None, calib, 2,
                                 input_chw=(int(data.get("channels", 1)), size, size), log=_log)
            out[f"{rt}-{prec}"] = d / built.artifact
            _log(f"{name}: built {rt} {prec} in {time.perf_counter() - t0:.0f} s"
                 + (f" (export's own check: INT8 {built.build['speed']['speedup']:.2f}x FP32)"
                    if "speed" in built.build else ""))
    return out


def time_and_profile(files: dict[str, Path], x: np.ndarray, rounds: int, per_round: int) -> dict[str, Any]:
    """Interleaved wall and CPU time of the four runners, INT8/FP32 speed-ups per runtime, profiles."""
    from pncd.bench import interleave as il
    from pncd.targets.base import RunnerOptions
    from pncd.targets.profiling import reason, summarize
    from pncd.targets.registry import TARGETS

    runners = {k: TARGETS.get(k.split("-")[0]).runner(p, "cpu", RunnerOptions(threads=1, precision=k.split("-")[1]))
               for k, p in files.items()}
    cpu: dict[str, list[float]] = {k: [] for k in runners}

    def infer(k: str, r: Any):
        def f(a: np.ndarray) -> None:
            c0 = time.process_time()
            r.infer({"image": a})
            cpu[k].append((time.process_time() - c0) * 1e3)
        return f

    try:
        timed = [il.Timed(k, infer(k, r.activate()), x) for k, r in runners.items()]
        machine = il.run_rounds(timed, rounds, per_round, warmup=3)
    finally:
        for r in runners.values():
            r.deactivate()
    stats = {t.ident: il.runner_stats(t, machine) for t in timed}
    cpu_rounds = {k: [float(np.median(v[3 + i * per_round: 3 + (i + 1) * per_round])) for i in range(rounds)]
                  for k, v in cpu.items()}
    out: dict[str, Any] = {"machine": machine, "runners": {}, "speedup": {}}
    for k, s in stats.items():
        prof = summarize(runners[k].profile({"image": x}, runs=20, warmup=5))
        out["runners"][k] = {"median_ms": s["median_ms"], "cv": s["cv"], "cpu_ms": float(np.median(cpu_rounds[k])),
                             "profile": prof, "reason": reason(prof)}
    for rt in RUNTIMES:
        wall = il.speedup(stats[f"{rt}-fp32"], stats[f"{rt}-int8"])
        cpu_sp = il.speedup({"median_ms": float(np.median(cpu_rounds[f"{rt}-fp32"])),
                             "round_medians_ms": cpu_rounds[f"{rt}-fp32"]},
                            {"median_ms": float(np.median(cpu_rounds[f"{rt}-int8"])),
                             "round_medians_ms": cpu_rounds[f"{rt}-int8"]})
        out["speedup"][rt] = {"wall": wall["speedup"], "wall_ci": wall["speedup_ci"], "cpu": cpu_sp["speedup"],
                              "cpu_ci": cpu_sp["speedup_ci"], "rounds": wall["speedup_rounds"]}
    return out


def dice_kept(name: str, data_root: str | None, work: Path) -> dict[str, Any]:
    """pncd export (every default) of the committed checkpoint at its own size, FP32 and INT8 per
    runtime, scored on the test split; {runtime: {fp32, int8, kept, val_dice_ratio}} or why not."""
    from pncd.data import DataSpec, load_split
    from pncd.errors import PncdError
    from pncd.export.pipeline import ExportOptions, export_run
    from pncd.io import read_json
    from pncd.scoring import predict, score
    from pncd.targets.registry import load_runner

    run = CHECKPOINTS.get(name)
    if run is None or not (run / "best.safetensors").is_file():
        return {"skipped": f"no committed trained checkpoint of {name} (bench/results/README.md), so no Dice"}
    cfg = read_json(run / "config.json")
    spec = DataSpec.from_dict({**cfg["data"], **({"root": data_root} if data_root else {})})
    if spec.root and not Path(spec.root).is_dir():
        return {"skipped": f"its data set {spec.root} is not here (--data)"}
    test = load_split(spec, "test")
    out: dict[str, Any] = {"split": "test", "size": spec.size, "cases": len(set(test.case_ids))}
    for rt in RUNTIMES:
        row: dict[str, Any] = {}
        for prec in ("fp32", "int8"):
            d = work / f"{name}-{rt}-{prec}-dice"
            try:
                man = export_run(run, ExportOptions(target=rt, precision=prec, out=str(d), data=data_root), log=_log)
            except PncdError as e:
                row[prec] = None
                row[f"{prec}_error"] = str(e)
                continue
            r = load_runner(d, device="cpu", threads=1).activate()
            try:
                preds = predict(lambda a: next(iter(r.infer({"image": a}).values())), test.images, batch=1)
            finally:
                r.deactivate()
            row[prec] = score(preds, test.masks, test.case_ids, spec.num_classes).summary()["dice"]
            if prec == "int8":
                row["val_dice_ratio"] = man["parity"].get("dice_ratio")
                row["speed_at_export"] = man["build"].get("speed")
        row["kept"] = row["int8"] / row["fp32"] if row.get("int8") is not None and row.get("fp32") else None
        out[rt] = row
        _log(f"{name} {rt}: Dice fp32 {row.get('fp32')}, int8 {row.get('int8')}, kept {row['kept']}")
    return out


EXPLAINED = """\
How to read it: each student's four runners (FP32 and INT8 on ONNX Runtime and OpenVINO) were timed
in interleaved rounds on one thread (`pncd.bench.interleave`), so all saw the same machine load;
the INT8/FP32 speed-up is the ratio of medians with a 95% bootstrap interval over rounds, from wall
time and from the process CPU time per inference (steadier on a shared machine). "INT8 profile"
is the INT8 artifact's own profiler (`pncd.targets.profiling.reason`): how much of its time is in
the weight layers, the only part INT8 speeds up, and where the rest goes. Dice kept: `pncd export`
of the committed checkpoint with every default, INT8 Dice / FP32 Dice of the same runtime on the
test split. The goal: INT8 >= 1.5x FP32 with >= 99.5% of the float Dice kept.

What the export does about it (`targets/onnxrt_build.py`, `targets/int8_moves.py`,
`targets/openvino_build.py`):

- ONNX Runtime: additions and clipping activations are quantized too (`Add`, `Relu`, `Clip`):
  a residual sum stays in 8 bits as `QLinearAdd` instead of a float `Add` between a
  `DequantizeLinear` and a `QuantizeLinear`, and ReLU/ReLU6 fold into the convolution before them
  (its output range is theirs). Data-movement chains between a dequantization and a quantization
  (ENet's max-unpooling: `Unsqueeze -> Where(mask, ., 0) -> Reshape -> DepthToSpace`) run on the
  8-bit tensor.
- OpenVINO: transposed convolutions get a signed symmetric input quantizer; behind NNCF's
  asymmetric one the CPU plugin ran them in f32 (ENet's three up-sampling convolutions).
- Where INT8 stays below 1.5x its FP32 (measured at export, one thread), the export prints one
  line with the profile's reason and the faster precision, and records it (`build.speed`).

Before these changes, on the same machine and load (runs of this script and side-by-side timings of
the same artifacts, not one run): ENet on ONNX Runtime 1.0x (its `Add`s in float between
`DequantizeLinear`/`QuantizeLinear` pairs, 40% of its INT8 time in (de)quantization and
transposes), ENet on OpenVINO 1.46x (CPU time), MobileNetV2 on ONNX Runtime 2.3x with 99.22% of the
test Dice (its ReLU6 in float; quantized with the convolution's range it keeps 99.71%).
"""


def _f(v: Any, nd: int = 4) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"# INT8 against FP32, batch 1, one thread, {results['size']}x{results['size']}", "",
             f"`{results['command']}`", "",
             f"CPU: {m['cpu']}; 1-minute load average {_f(m['load_before'], 1)} to {_f(m['load_after'], 1)} "
             f"({m['cpus']} CPUs, "
             "shared with other jobs); "
             f"onnxruntime {m['onnxruntime']}, openvino {m['openvino']}.", "",
             "| student | runtime | FP32 ms | INT8 ms | INT8/FP32 wall (95% CI) | INT8/FP32 CPU time (95% CI) "
             "| Dice kept (test) | goal met | load avg |", "|---|---|---|---|---|---|---|---|---|"]
    notes, weights = [], []
    for name, r in results["students"].items():
        for rt in RUNTIMES:
            sp, f, i = r["speedup"][rt], r["runners"][f"{rt}-fp32"], r["runners"][f"{rt}-int8"]
            d = (r.get("dice") or {}).get(rt) or {}
            kept = f"{d['kept']:.2%}" if d.get("kept") else "–"
            fast = sp["wall"] >= GOAL_SPEEDUP
            edge = " (at the edge: interval or CPU time below 1.5x)" if fast and min(sp["wall_ci"][0], sp["cpu"]) < \
                GOAL_SPEEDUP else ""
            met = ("yes" + edge if fast and d["kept"] >= GOAL_DICE else "no") if d.get("kept") else \
                f"{'yes' + edge if fast else 'no'} (speed; no Dice)"
            lines.append(f"| {name} | {rt} | {f['median_ms']:.1f} | {i['median_ms']:.1f} | "
                         f"{sp['wall']:.2f}x ({sp['wall_ci'][0]:.2f}-{sp['wall_ci'][1]:.2f}) | {sp['cpu']:.2f}x "
                         f"({sp['cpu_ci'][0]:.2f}-{sp['cpu_ci'][1]:.2f}) | {kept} | {met} | "
                         f"{_f(r['machine']['load_before'], 1)}-{_f(r['machine']['load_after'], 1)} |")
            notes.append(f"- {name}, {rt} INT8: {i['reason']}.")
        dice = r.get("dice") or {}
        why = dice.get("skipped")
        notes_d = (f"- {name}: weights {r['weights']}; " + (f"Dice not measured: {why}." if why else
                   f"Dice on the {dice['cases']} {dice['split']} cases at {dice['size']}x{dice['size']}: " + "; ".join(
                       f"{rt} FP32 {_f(dice[rt].get('fp32'))}, INT8 {_f(dice[rt].get('int8'))} (val ratio at export "
                       f"{_f(dice[rt].get('val_dice_ratio'))})" for rt in RUNTIMES if rt in dice) + "."))
        weights.append(notes_d)
    return "\n".join(lines + ["", "## Where the INT8 time goes (its profile)", "", *notes, "", "## Weights and Dice", "",
                               *weights, "", "## About these numbers", "", EXPLAINED]) + "\n"


@click.command()
@click.option("--models", default="enet,mobilenetv2,resnet18", show_default=True)
@click.option("--size", default=256, show_default=True)
@click.option("--rounds", default=10, show_default=True)
@click.option("--iters", default=60, show_default=True, help="Timed inferences per runner (split over the rounds).")
@click.option("--calib-size", default=32, show_default=True)
@click.option("--data", default=None, help="Data set root of the checkpoints (default: the one each run recorded).")
@click.option("--dice/--no-dice", default=True, show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path))
def main(models: str, size: int, rounds: int, iters: int, calib_size: int, data: str | None, dice: bool,
         out: Path) -> None:
    """INT8 against FP32 for each student on ONNX Runtime and OpenVINO (see the module docstring)."""
    import importlib.metadata as md

    import torch

    from pncd.targets.cpu import isa_summary

    torch.set_num_threads(1)
    results: dict[str, Any] = {"size": size, "threads": 1, "rounds": rounds, "iters": iters, "calib_size": calib_size,
                               "command": "python bench/experiments/int8_speed.py " + " ".join(sys.argv[1:]),
                               "students": {}}
    loads = []
    for name in models.split(","):
        with tempfile.TemporaryDirectory(prefix=f"pncd-int8-speed-{name}-") as tmp:
            model, spec, weights = student(name, size, data)
            _log(f"{name}: {weights}")
            files = build(name, model, spec, size, calib_size, Path(tmp))
            shape = (1, int(spec.get("channels", 1)), size, size)
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            r = time_and_profile(files, x, rounds, max(1, iters // rounds))
            loads += [r["machine"]["load_before"], r["machine"]["load_after"]]
            for rt in RUNTIMES:
                sp = r["speedup"][rt]
                _log(f"{name} {rt}: INT8/FP32 {sp['wall']:.2f}x (95% CI {sp['wall_ci'][0]:.2f}-{sp['wall_ci'][1]:.2f}),"
                     f" CPU time {sp['cpu']:.2f}x; INT8 profile: {r['runners'][f'{rt}-int8']['reason']}")
            r["weights"] = weights
            r["dice"] = dice_kept(name, data, Path(tmp)) if dice else {"skipped": "--no-dice"}
            results["students"][name] = r
    results["machine"] = {"cpu": isa_summary(), "platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_before": min(v for v in loads if v is not None) if loads else None,
                          "load_after": max(v for v in loads if v is not None) if loads else None,
                          "onnxruntime": md.version("onnxruntime"), "openvino": md.version("openvino")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "README.md").write_text(render(results))
    print(render(results))


if __name__ == "__main__":
    main()
