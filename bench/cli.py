"""``pncd bench``: latency and accuracy of exported artifacts against their torch reference.

For each artifact (a directory written by ``pncd export``, described by its ``manifest.json``)
and, once per source run, the torch model it was exported from:

- latency: warm-up, timed loop at batch 1 (statistics, throughput), throughput at a larger
  batch, first inference, activation, memory (:mod:`pncd.bench.latency`);
- accuracy: the whole split with the run's preprocessing, Dice/VOE/RVD per case
  (:mod:`pncd.bench.accuracy`), compared with the reference (differences, worst case drop,
  paired bootstrap interval);
- a report directory (written atomically): report.json, report.md, latency_dice.png and
  overlays/ (:mod:`pncd.bench.report`).

``--device jetson`` runs each artifact's ONNX on a Jetson through :mod:`pncd.targets.jetson`
(over SSH with ``--host``, or locally on the Jetson itself). The torch reference then runs on
this machine's CPU, and the report says so.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import click
import numpy as np

from pncd.errors import PncdError

DEVICES = ("cpu", "cuda", "jetson")


# ---------------------------------------------------------------------------------------------
# Artifacts
# ---------------------------------------------------------------------------------------------


def read_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """The parts of an artifact's manifest.json the bench needs, checked, with clear errors."""
    from pncd.targets.registry import find_manifest, read_manifest

    if find_manifest(path) is None:
        raise PncdError(f"{path}: not an exported artifact (no manifest.json); pass a directory written by pncd export")
    man_path = find_manifest(path)
    man = read_manifest(man_path)
    d = man_path.parent
    for key in ("source_run", "data"):
        if man.get(key) in (None, ""):
            raise PncdError(f"{man_path} lacks '{key}'; re-export the artifact with this pncd version")
    source = Path(man["source_run"])
    if not source.is_absolute():
        source = (d / source).resolve() if (d / source).exists() else source.resolve()
    model = man.get("model")
    if isinstance(model, dict):
        model = model.get("name")
    onnx = None
    for name in (man.get("artifact"), man.get("onnx")):
        if isinstance(name, str) and name.endswith(".onnx") and (d / name).is_file():
            onnx = d / name
            break
    if not isinstance(man["data"], dict):
        raise PncdError(f"{man_path}: 'data' is not a data spec object; re-export the artifact")
    return {
        "dir": d,
        "manifest": man,
        "target": str(man["target"]),
        "precision": str(man["precision"]),
        "runtime": str(man.get("runtime") or man["target"]),
        "model": str(model) if model else None,
        "source_run": source,
        "input_name": str(man["input_name"]),
        "output_name": str(man["output_name"]),
        "data": dict(man["data"]),
        "onnx": onnx,
        "static_batch": _static_batch(man),
    }


def _static_batch(man: dict[str, Any]) -> int | None:
    """The fixed batch size of an artifact's input (None when the batch axis is dynamic)."""
    shape = (man.get("input") or {}).get("shape") or []
    return int(shape[0]) if shape and isinstance(shape[0], int) else None


def verify_artifacts(arts: list[dict[str, Any]]) -> None:
    """Each artifact's files against the SHA-256 of its manifest: a swapped or damaged file is
    refused before anything is timed (``--no-verify`` skips this, and the report says so)."""
    from pncd.export.manifest import verify

    for a in arts:
        problems = verify(a["dir"], extras=False)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise PncdError(f"{a['dir']}: {problems[0]}{more}; re-export the artifact, or pass --no-verify to "
                            "bench it anyway")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _unique(ident: str, taken: set[str]) -> str:
    out, i = ident, 2
    while out in taken:
        out, i = f"{ident}-{i}", i + 1
    taken.add(out)
    return out


def _local_runtime(a: dict[str, Any], device: str) -> str | None:
    """TensorRT artifacts on a CPU run their ONNX on ONNX Runtime (TensorRT needs an NVIDIA GPU)."""
    if a["runtime"] == "tensorrt" and device == "cpu":
        return "onnxruntime"
    return None


def _load_runner(a: dict[str, Any], device: str, threads: int | None, inference_precision: str | None = None) -> Any:
    from pncd.targets.registry import load_runner

    return load_runner(a["dir"], device=device, runtime=_local_runtime(a, device), threads=threads,
                       inference_precision=inference_precision)


def _torch_runner(a: dict[str, Any], device: str, threads: int | None) -> Any:
    from pncd.checkpoint import load_model
    from pncd.targets.torch_runner import TorchRunner

    model, _cfg = load_model(a["source_run"], device="cpu")
    return TorchRunner(model, input_name=a["input_name"], output_name=a["output_name"], device=device, threads=threads)


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------


def host_machine() -> dict[str, Any]:
    """What this machine is and how the bench used it (threads, GPU, driver)."""
    import torch

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": None,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": None,
        "gpu_driver": None,
    }
    from pncd.targets.cpu import cpu_model

    info["cpu_model"] = cpu_model()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
            if out:
                name, _, drv = out[0].partition(",")
                info["gpu"] = info["gpu"] or name.strip()
                info["gpu_driver"] = drv.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return info


# ---------------------------------------------------------------------------------------------
# run_bench
# ---------------------------------------------------------------------------------------------


def run_bench(
    artifacts: Sequence[str | os.PathLike],
    data_root: str | os.PathLike | None = None,
    split: str = "test",
    device: str = "cpu",
    host: str | None = None,
    out: str | os.PathLike = "bench-report",
    *,
    force: bool = False,
    warmup: int = 10,
    iters: int = 100,
    duration: float = 0.0,
    batch: int = 8,
    accuracy_batch: int = 8,
    n_boot: int = 2000,
    seed: int = 0,
    overlays: int = 4,
    reference: bool = True,
    verify: bool = True,
    threads: int | None = None,
    inference_precision: str | None = None,
    ssh_options: Sequence[str] = (),
    remote_python: str | None = None,
    remote_backend: str = "auto",
    engine_cache: str = "~/.cache/pncd-engines",
    tegrastats: str = "auto",
    progress: bool = True,
    command: str | None = None,
    options: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark ``artifacts`` and their torch references; write the report to ``out``.

    Returns the report (the content of report.json) with ``"path"`` set to the report
    directory. Raises :class:`PncdError` on bad input before anything is written.
    """
    from pncd.bench import latency as lat
    from pncd.bench import report as rep
    from pncd.bench.accuracy import compare, score
    from pncd.evaluation import predict, worst_slices
    from pncd.data import DataSpec, load_split
    from pncd.io import atomic_dir, versions, write_json, write_text
    from pncd.targets.cpu import compute_precision
    from pncd.targets.cpu import isa_summary as cpu_summary

    log = log or (lambda msg: click.echo(msg, err=True))
    if device not in DEVICES:
        raise PncdError(f"unknown --device {device!r}; use one of {', '.join(DEVICES)}")
    if host and device != "jetson":
        raise PncdError("--host only applies to --device jetson")
    if not artifacts:
        raise PncdError("no artifact given; pass one or more directories written by pncd export")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PncdError("--device cuda was asked for but no CUDA device is visible; use --device cpu")
    from pncd.runtime import default_threads

    why = "--threads" if threads else "default: physical cores / processes"
    threads = threads or default_threads()
    log(f"threads: {threads} per runtime ({why})")
    if device == "jetson":  # host and ssh options: one line now, not after the data has loaded
        from pncd.targets.ssh import check_host, normalize_options

        normalize_options(ssh_options)
        if host is not None:
            check_host(host)
    arts = [read_artifact(a) for a in artifacts]
    if verify:
        verify_artifacts(arts)
    from pncd.io import check_output

    check_output(out, force, protect=tuple(a["dir"] for a in arts) + tuple(a["source_run"] for a in arts)
                 + ((data_root,) if data_root is not None else ()))
    for a in arts:
        if device == "jetson" and a["onnx"] is None:
            raise PncdError(f"{a['dir']}: the Jetson path runs ONNX, and this {a['target']} artifact has no .onnx "
                            "file; export with --target tensorrt or onnxruntime")
        if reference and not (a["source_run"] / "config.json").is_file():
            raise PncdError(f"{a['dir']}: its source run {a['source_run']} is missing (no config.json); "
                            "restore the run or pass --no-reference")
    lat_opts = lat.LatencyOptions(warmup=warmup, iters=iters, duration=duration, batch=batch)
    jet_opts = None
    if device == "jetson":
        from pncd.targets.jetson import JetsonOptions

        jet_opts = JetsonOptions(host=host, ssh_options=tuple(ssh_options), remote_python=remote_python,
                                 backend=remote_backend, cache_dir=engine_cache, warmup=warmup, iters=iters,
                                 duration=duration, batch=batch, accuracy_batch=accuracy_batch, tegrastats=tegrastats)

    with atomic_dir(out, force=force, protect=tuple(a["dir"] for a in arts)) as tmp:
        splits: dict[str, Any] = {}
        entries: list[dict[str, Any]] = []
        per_case: dict[str, list[dict]] = {}
        settings: dict[str, Any] = {}
        preds_of: dict[str, np.ndarray] = {}
        split_of: dict[str, str] = {}
        refs: dict[str, str] = {}
        taken: set[str] = set()
        device_env: dict[str, Any] | None = None

        def get_split(spec_dict: dict[str, Any]) -> tuple[str, Any]:
            spec_d = dict(spec_dict)
            if data_root is not None:
                spec_d["root"] = str(data_root)
            key = json.dumps(spec_d, sort_keys=True, default=str)
            if key not in splits:
                spec = DataSpec.from_dict(spec_d)
                log(f"loading the {split} split of {spec.root or 'the synthetic data set'} ({spec.size}x{spec.size})")
                splits[key] = load_split(spec, split)
            return key, splits[key]

        def local_entry(make_runner: Callable[[], Any], input_name: str, output_name: str | None,
                        ss: Any, desc: str, precision: str = "fp32",
                        static_batch: int | None = None) -> tuple[dict, np.ndarray, dict]:
            runner, m = lat.measure(make_runner, input_name, output_name, ss.images, lat_opts,
                                    static_batch=static_batch, desc=desc if progress else None)
            try:
                def infer(x: np.ndarray) -> np.ndarray:
                    o = runner.infer({input_name: x})
                    return o[output_name] if output_name and output_name in o else next(iter(o.values()))

                preds = predict(infer, ss.images, accuracy_batch, single_fallback=True, desc=desc if progress else None)
                run_settings = dict(getattr(runner, "settings", None) or {})
                run_settings.setdefault("runner", type(runner).__name__)
                run_settings["compute_precision"] = compute_precision(runner, precision)
            finally:
                runner.deactivate()
            timing = {"b1": lat.summarize(m["b1_raw"]),
                      "batch": (lat.summarize(m["batch_raw"]) if "error" not in m["batch_raw"] else m["batch_raw"])}
            fields = {**rep.latency_fields(timing), "first_inference_ms": m["first_inference_ms"],
                      "activation_s": m["activation_s"], "mem_rss_peak_growth_mib": m["memory"]["rss_peak_growth_mib"],
                      "mem_rss_delta_mib": m["memory"]["rss_delta_mib"]}
            return fields, preds, run_settings

        for a in arts:
            key, ss = get_split(a["data"])
            num_classes = int(ss.spec.num_classes)
            run_name = a["source_run"].name
            ref_id = None
            if reference:
                rkey = f"{a['source_run']}|{key}"  # one reference per run and preprocessing
                if rkey not in refs:
                    ref_device = "cpu" if device == "jetson" else device
                    rid = _unique(_slug(f"{run_name}-torch-fp32"), taken)
                    log(f"[{rid}] torch reference on {ref_device}")
                    fields, preds, rs = local_entry(
                        lambda a=a, d=ref_device: _torch_runner(a, d, threads),
                        a["input_name"], a["output_name"], ss, f"{rid}")
                    summary, cases = score(preds, ss.masks, ss.case_ids, num_classes)
                    entries.append({
                        "id": rid, "key": rid, "kind": "reference", "name": f"torch:{run_name}", "ref_id": None,
                        "source_run": str(a["source_run"]), "artifact_dir": None, "model": a["model"],
                        "target": "torch", "runtime": "torch", "precision": "fp32", "device": ref_device,
                        "where": "host" if device == "jetson" else ref_device, "backend": "torch",
                        "backend_reason": None, "compute_precision": rs.get("compute_precision"), **fields,
                        "engine_build_s": None, "engine_from_cache": None,
                        "latency_what": "end-to-end: numpy in and out, on this machine",
                        **_no_power(), **rep.accuracy_fields(summary), **rep.compare_fields(None),
                    })
                    per_case[rid], settings[rid], preds_of[rid], split_of[rid] = cases, rs, preds, key
                    refs[rkey] = rid
                ref_id = refs[rkey]
            # the run's name usually names the model already ("enet-pncd"): say it once
            model_part = "" if not a["model"] or a["model"] in run_name else f"-{a['model']}"
            aid = _unique(_slug(f"{run_name}{model_part}-{a['target']}-{a['precision']}"), taken)
            where = device
            extra: dict[str, Any] = {}
            if device == "jetson":
                from pncd.targets.jetson import run_on_device

                log(f"[{aid}] {a['onnx'].name} on the Jetson {host or '(this machine)'}")
                drun = run_on_device(a["onnx"], ss.images, a["precision"], jet_opts, log=log)
                preds = drun.preds
                r = drun.result
                device_env = device_env or r.get("env")
                timing = {"b1": lat.summarize(r["latency_b1"]),
                          "batch": lat.summarize(r["latency_batch"]) if "error" not in r["latency_batch"]
                          else r["latency_batch"]}
                mem = r.get("memory") or {}
                growth = (mem["ru_maxrss_after_kb"] - mem["ru_maxrss_before_kb"]) / 1024.0 if mem else None
                power = r.get("power") or {}
                fields = {**rep.latency_fields(timing), "first_inference_ms": r.get("first_inference_ms"),
                          "activation_s": r.get("activation_s"), "mem_rss_peak_growth_mib": growth,
                          "mem_rss_delta_mib": None}
                extra = {"compute_precision": f"{a['precision']} on {r['backend']}",
                         "backend": r["backend"], "backend_reason": r.get("backend_reason"),
                         "engine_build_s": r.get("engine_build_s"),
                         "engine_from_cache": (r.get("settings") or {}).get("engine_from_cache"),
                         "power_mean_mw": power.get("power_mean_mw"), "power_source": _src(power.get("power_source")),
                         "energy_per_inference_mj": power.get("energy_per_inference_mj"),
                         "nvpmodel_mode": (r.get("nvpmodel") or {}).get("mode"),
                         "jetson_clocks": ((r.get("env") or {}).get("clocks") or {}).get("jetson_clocks")}
                where = host or "jetson-local"
                settings[aid] = {**(r.get("settings") or {}), "device": {**drun.where, "env": r.get("env")},
                                 "power": power or None, "nvpmodel": r.get("nvpmodel")}
            else:
                log(f"[{aid}] {a['target']} {a['precision']} on {device}")
                if _local_runtime(a, device):
                    log(f"[{aid}] TensorRT needs an NVIDIA GPU: running its ONNX on ONNX Runtime (cpu)")
                fields, preds, rs = local_entry(lambda a=a: _load_runner(a, device, threads, inference_precision),
                                                a["input_name"], a["output_name"], ss, aid, a["precision"],
                                                a["static_batch"])
                settings[aid] = rs
                extra = {"compute_precision": rs.get("compute_precision"),
                         "backend": _local_runtime(a, device) or a["runtime"],
                         "backend_reason": ("ONNX of a TensorRT artifact on a CPU" if _local_runtime(a, device) else None),
                         "engine_build_s": None,
                         "engine_from_cache": None, **_no_power()}
            summary, cases = score(preds, ss.masks, ss.case_ids, num_classes)
            cmp = None
            if ref_id is not None:
                cmp = compare(cases, per_case[ref_id], summary, _entry(entries, ref_id), preds, preds_of[ref_id],
                              n_boot=n_boot, seed=seed)
            entries.append({
                "id": aid, "key": aid, "kind": "artifact", "name": a["dir"].name, "ref_id": ref_id,
                "source_run": str(a["source_run"]), "artifact_dir": str(a["dir"]), "model": a["model"],
                "target": a["target"], "runtime": a["runtime"], "precision": a["precision"], "device": device,
                "where": where, **fields, **extra,
                "latency_what": "end-to-end: numpy in and out" + (" on the device" if device == "jetson" else ""),
                **rep.accuracy_fields(summary), **rep.compare_fields(cmp),
            })
            per_case[aid], preds_of[aid], split_of[aid] = cases, preds, key

        files: dict[str, Any] = {"plot": None, "overlays": []}
        if rep.plot_latency_dice(entries, tmp / "latency_dice.png"):
            files["plot"] = "latency_dice.png"
        if overlays > 0:
            from pncd.viz import save_png

            for e in entries:
                if e["kind"] != "artifact" or e["ref_id"] is None:
                    continue
                ss = splits[split_of[e["id"]]]
                a_p, r_p = preds_of[e["id"]], preds_of[e["ref_id"]]
                for i in worst_slices(a_p, r_p, overlays):
                    name = f"overlays/{e['id']}__{_slug(ss.case_ids[i])}_s{ss.slice_index[i]}.png"
                    (tmp / "overlays").mkdir(exist_ok=True)
                    scale = max(1, 256 // max(ss.masks.shape[1:]))  # small inputs are enlarged to be readable
                    save_png(tmp / name, rep.disagreement_panel(ss.images[i], ss.masks[i], r_p[i], a_p[i]), scale=scale,
                             titles=rep.PANEL_TITLES,
                             caption=f"{e['name']} vs {e['ref_id']}: {ss.case_ids[i]}, slice {ss.slice_index[i]}")
                    files["overlays"].append(name)
        first = next(iter(splits.values()))
        from pncd import __version__

        report = {
            "schema": rep.SCHEMA,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pncd_version": __version__,
            "artifacts_verified": "sha256 against each manifest" if verify else "skipped (--no-verify)",
            "command": command or command_line(),
            "options": options or {},
            "machine": {**host_machine(), "bench_threads": threads, "cpu_isa": cpu_summary()},
            "device_machine": _device_machine(device_env),
            "versions": versions(),
            "data": {"root": str(data_root) if data_root is not None else first.spec.root, "split": split,
                     "n_cases": len(dict.fromkeys(first.case_ids)), "n_slices": int(len(first.images)),
                     "size": first.spec.size, "channels": first.spec.channels, "num_classes": first.spec.num_classes,
                     "normalization": first.spec.normalization},
            "entries": entries,
            "per_case": per_case,
            "settings": settings,
            "files": files,
        }
        write_json(tmp / "report.json", report)
        write_text(tmp / "report.md", rep.render_markdown(report))
    report["path"] = str(Path(out))
    return report


def command_line() -> str:
    """The command line this process was started with, as a user would type it."""
    import shlex

    script = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    if Path(script).name == "__main__.py":  # python -m PACKAGE
        prog = f"python -m {Path(script).parent.name}"
    elif script.endswith(".py"):
        prog = f"python {script}"
    else:  # a console script such as pncd
        prog = Path(script).name
    return " ".join([prog, *(shlex.quote(a) for a in sys.argv[1:])])


def _entry(entries: list[dict], ident: str) -> dict:
    return next(e for e in entries if e["id"] == ident)


def _no_power() -> dict[str, Any]:
    return {"power_mean_mw": None, "power_source": None, "energy_per_inference_mj": None, "nvpmodel_mode": None,
            "jetson_clocks": None}


def _src(source: Any) -> str | None:
    return ",".join(source) if isinstance(source, list) else source


def _device_machine(env: dict[str, Any] | None) -> dict[str, Any] | None:
    if not env:
        return None
    keys = ("hostname", "device_model", "l4t_release", "machine", "cpu_model", "cpu_count", "gpu_name", "python",
            "numpy", "tensorrt", "onnxruntime", "onnxruntime_providers", "tegrastats")
    return {k: env.get(k) for k in keys}


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _bench_options(fn: Callable) -> Callable:
    from pncd.config import config_option

    opts = [
        click.argument("artifacts", nargs=-1, type=click.Path(path_type=Path)),
        click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Data set root; overrides the root in each artifact's data spec (default: the run's)."),
        click.option("--split", type=click.Choice(["train", "val", "test", "all"]), default="test", show_default=True),
        click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
                     help="Where artifacts run. jetson: on a Jetson (with --host over SSH, else locally)."),
        click.option("--host", default=None, help="user@address (or ~/.ssh/config alias) of the Jetson."),
        click.option("--out", type=click.Path(path_type=Path), required=True, help="Report directory (new)."),
        click.option("--force", is_flag=True, help="Replace an existing report directory."),
        click.option("--warmup", type=click.IntRange(0), default=10, show_default=True),
        click.option("--iters", type=click.IntRange(1), default=100, show_default=True,
                     help="Timed iterations at batch 1."),
        click.option("--duration", type=click.FloatRange(0), default=0.0, show_default=True,
                     help="Seconds to time instead of --iters (0: use --iters)."),
        click.option("--batch", type=click.IntRange(1), default=8, show_default=True,
                     help="Batch size for the throughput measurement (1: skip)."),
        click.option("--accuracy-batch", type=click.IntRange(1), default=8, show_default=True),
        click.option("--n-boot", type=click.IntRange(100), default=2000, show_default=True,
                     help="Bootstrap resamples for the Dice difference interval."),
        click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed."),
        click.option("--overlays", type=click.IntRange(0), default=4, show_default=True,
                     help="Overlay PNGs per artifact: the slices where it disagrees most with its reference."),
        click.option("--no-reference", is_flag=True, help="Skip the torch reference (no comparison)."),
        click.option("--no-verify", is_flag=True,
                     help="Do not check each artifact's files against the SHA-256 in its manifest (recorded in the report)."),
        click.option("--threads", type=click.IntRange(1), default=None,
                     help="Intra-op threads for local runtimes and torch (default: the usable physical cores, "
                          "divided among the processes of a torchrun; printed)."),
        click.option("--inference-precision", type=click.Choice(["auto", "f32", "f16", "bf16"]), default=None,
                     help="OpenVINO compute precision (default: the one the artifact was exported and checked with; "
                          "auto = f32 for fp32/int8, f16 for fp16 where the CPU computes in FP16)."),
        click.option("--ssh-option", "ssh_options", multiple=True,
                     help="Extra ssh/scp option, repeatable: '-i KEY', '-p PORT', '-o UserKnownHostsFile=F', '-J JUMP'."),
        click.option("--remote-python", default=None,
                     help="Python on the Jetson (default python3; locally: this interpreter)."),
        click.option("--remote-backend", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto",
                     show_default=True, help="auto: TensorRT when importable on the device, else ONNX Runtime."),
        click.option("--engine-cache", default="~/.cache/pncd-engines", show_default=True,
                     help="TensorRT engine cache directory on the device."),
        click.option("--tegrastats", default="auto", show_default=True,
                     help="Power sampling on the Jetson: auto (if on PATH), off, or a path."),
        click.option("--gate", "gate_baseline", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="After the bench, run pncd gate against this baseline (exit 1 if a rule fails)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return config_option(fn)


@click.command("bench", context_settings={"max_content_width": 100})
@_bench_options
@click.pass_context
def bench_command(ctx: click.Context, artifacts: tuple[Path, ...], data: Path | None, split: str, device: str,
                  host: str | None, out: Path, force: bool, warmup: int, iters: int, duration: float, batch: int,
                  accuracy_batch: int, n_boot: int, seed: int, overlays: int, no_reference: bool, no_verify: bool, threads: int | None,
                  inference_precision: str | None, ssh_options: tuple[str, ...], remote_python: str | None, remote_backend: str, engine_cache: str,
                  tegrastats: str, gate_baseline: Path | None, config: str | None = None) -> None:
    """Latency and accuracy of exported ARTIFACTS against the torch reference of their run.

    \b
    Examples:
      pncd bench exports/enet-ort-fp32 exports/enet-ort-int8 --data DIR --out reports/enet
      pncd bench exports/enet-trt-fp16 --device jetson --host nvidia@orin.local \\
          --ssh-option '-i ~/.ssh/orin' --out reports/orin
      pncd bench exports/enet-ov-int8 --out reports/ov --gate baselines/enet.json
    """
    from pncd.config import resolved_params

    report = run_bench(
        artifacts, data_root=data, split=split, device=device, host=host, out=out, force=force, warmup=warmup,
        iters=iters, duration=duration, batch=batch, accuracy_batch=accuracy_batch, n_boot=n_boot, seed=seed,
        overlays=overlays, reference=not no_reference, verify=not no_verify, threads=threads, inference_precision=inference_precision,
        ssh_options=ssh_options, remote_python=remote_python,
        remote_backend=remote_backend, engine_cache=engine_cache, tegrastats=tegrastats,
        options=resolved_params(ctx),
    )
    for e in report["entries"]:
        click.echo(f"{e['name']:<36} {e.get('compute_precision') or '':<12} median "
                   f"{e['latency_ms_median'] or float('nan'):8.3f} ms   "
                   f"Dice {e['dice'] if e['dice'] is not None else float('nan'):.4f}"
                   + (f"   ΔDice {e['dice_diff']:+.5f}" if e.get("dice_diff") is not None else ""))
    click.echo(f"report: {out}/report.md")
    if gate_baseline is not None:
        from pncd.bench.gate import print_rows, run_gate

        ok, rows = run_gate(Path(out) / "report.json", gate_baseline)
        print_rows(rows)
        if not ok:
            ctx.exit(1)
