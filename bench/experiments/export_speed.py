"""CPU latency of every local export variant against torch eager, in one run.

For each network (untrained by default: latency does not depend on the weights; ``--run DIR``
uses a trained run instead), at ``--size`` x ``--size``, batch 1:

    torch eager FP32 | ORT fp32 / fp16 / int8 | OpenVINO fp32 / fp16 / int8

Every variant is built by the same functions ``pncd export`` uses (INT8 calibrated on
``--calib-size`` training images of the synthetic data set, or of the run's data set), warmed
up, then timed ``--iters`` times with ``time.perf_counter`` around ``runner.infer`` (numpy in,
numpy out; CPU inference is synchronous), all variants interleaved in ten round-robin slices
so that load from other processes hits them alike. All runtimes get the same fixed thread count. The
table shows the median and p90 latency and the speed-up over torch eager (torch median /
variant median), plus the argmax agreement with torch on a few held-out images.

Example::

    python bench/experiments/export_speed.py --models enet --iters 20
    python bench/experiments/export_speed.py --size 256 --iters 100 --json export_speed.json
    python bench/experiments/export_speed.py --run runs/enet-pncd --iters 50
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np

from pncd.targets.cpu import cpu_model, resolve_inference_precision

DEFAULT_MODELS = ("enet", "mobilenetv2", "resnet18", "dcsaunet")
VARIANTS = ("ort-fp32", "ort-fp16", "ort-int8", "ov-fp32", "ov-fp16", "ov-int8")


def time_interleaved(runners: dict[str, Any], feed: dict[str, np.ndarray], warmup: int, iters: int,
                     rounds: int = 10) -> dict[str, dict[str, float]]:
    """Warm every runner up, then time ``iters`` calls of each in ``rounds`` round-robin slices.

    Interleaving puts every variant under the same load as the others, so the ratios hold on a
    shared, noisy machine where a sequential run would credit one variant with another's quiet
    minute. Milliseconds per runner: median, p90, mean, min.
    """
    for r in runners.values():
        r.activate()
        for _ in range(warmup):
            r.infer(feed)
    from pncd.bench.latency import timed_loop

    x = next(iter(feed.values()))  # timed_loop reads the batch size off it
    times: dict[str, list[float]] = {k: [] for k in runners}
    rounds = max(1, min(rounds, iters))
    for i in range(rounds):
        n = iters // rounds + (1 if i < iters % rounds else 0)
        for k, r in runners.items():
            times[k] += timed_loop(lambda _x, r=r: r.infer(feed), x, warmup=0, iters=n, duration=0.0)["end_to_end_ms"]
    out = {}
    for k, ts in times.items():
        ts.sort()
        out[k] = {"median_ms": statistics.median(ts), "p90_ms": ts[min(len(ts) - 1, int(0.9 * len(ts)))],
                  "mean_ms": statistics.fmean(ts), "min_ms": ts[0]}
    return out


def _model_and_data(name: str | None, run: str | None, size: int):
    """(label, model, data spec dict) for a fresh network or a trained run."""
    from pncd import models
    from pncd.data import DataSpec

    if run is not None:
        from pncd.checkpoint import load_model

        model, cfg = load_model(run)
        data = dict(cfg["data"])
        return f"{cfg['model']['name']} ({Path(run).name})", model, data
    import torch

    torch.manual_seed(0)
    return name, models.create(name).eval(), DataSpec(root=None, size=size).to_dict()


def _variants(fp32_onnx: Path, work: Path, calib: np.ndarray, threads: int) -> dict[str, Callable[[], Any]]:
    """Build every variant; returns name -> runner factory."""
    from pncd.data.images import ImageSet
    from pncd.targets.onnx_export import INPUT_NAME
    from pncd.targets.openvino_build import convert
    from pncd.targets.onnxrt_build import quantize_int8, to_fp16
    from pncd.targets.onnxrt import OnnxRuntimeRunner
    from pncd.targets.openvino_rt import OpenVinoRunner

    to_fp16(fp32_onnx, work / "ort_fp16.onnx")
    quantize_int8(fp32_onnx, work / "ort_int8.onnx", calib, INPUT_NAME, "minmax", symmetric=False)
    cal = ImageSet(calib, np.zeros((len(calib), *calib.shape[-2:]), np.int64), ["c"] * len(calib), "train", "", len(calib))
    for p in ("fp32", "fp16", "int8"):
        convert(fp32_onnx, work / f"ov_{p}.xml", p, INPUT_NAME, calib=cal if p == "int8" else None)
    return {
        "ort-fp32": lambda: OnnxRuntimeRunner(fp32_onnx, threads=threads),
        "ort-fp16": lambda: OnnxRuntimeRunner(work / "ort_fp16.onnx", threads=threads),
        "ort-int8": lambda: OnnxRuntimeRunner(work / "ort_int8.onnx", threads=threads),
        # the compute precision pncd export/bench pick by default (auto), not OpenVINO's bf16 default
        "ov-fp32": lambda: OpenVinoRunner(work / "ov_fp32.xml", threads=threads,
                                          precision_hint=resolve_inference_precision("auto", "fp32")),
        "ov-fp16": lambda: OpenVinoRunner(work / "ov_fp16.xml", threads=threads,
                                          precision_hint=resolve_inference_precision("auto", "fp16")),
        "ov-int8": lambda: OpenVinoRunner(work / "ov_int8.xml", threads=threads,
                                          precision_hint=resolve_inference_precision("auto", "int8")),
    }


def bench_one(label: str, model, data: dict, size: int, iters: int, warmup: int, threads: int,
              calib_size: int, variants: tuple[str, ...], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """All rows for one network: torch eager and each variant, timed interleaved."""
    from pncd.export.calibration import calibration_images, held_out_images
    from pncd.targets.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
    from pncd.export.parity import runner_logits
    from pncd.targets.torch_runner import TorchRunner

    channels = int(data.get("channels", 1))
    calib = calibration_images(data, calib_size, (size, size), None).images
    held = held_out_images(data, 4, (size, size)).images
    feed = {INPUT_NAME: np.ascontiguousarray(held[:1])}
    rows = []
    with tempfile.TemporaryDirectory(prefix="pncd-speed-") as work:
        work_p = Path(work)
        export_onnx(model, work_p / "fp32.onnx", channels, size, size)
        factories = _variants(work_p / "fp32.onnx", work_p, calib, threads)
        runners = {"torch-fp32": TorchRunner(model, threads=threads), **{v: factories[v]() for v in variants}}
        try:
            timed = time_interleaved(runners, feed, warmup, iters)
            ref = runner_logits(runners["torch-fp32"], INPUT_NAME, OUTPUT_NAME, held).argmax(1)
            for v, r in runners.items():
                agree = 1.0 if v == "torch-fp32" else float((runner_logits(r, INPUT_NAME, OUTPUT_NAME, held).argmax(1) == ref).mean())
                rows.append({"model": label, "variant": v, **timed[v],
                             "speedup_vs_torch": timed["torch-fp32"]["median_ms"] / timed[v]["median_ms"], "argmax_agreement": agree})
                log(f"{label}: {v} {timed[v]['median_ms']:.2f} ms")
        finally:
            for r in runners.values():
                r.deactivate()
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    head = f"{'model':<22} {'variant':<11} {'median ms':>10} {'p90 ms':>9} {'x torch':>8} {'agree':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<22} {r['variant']:<11} {r['median_ms']:>10.2f} {r['p90_ms']:>9.2f} "
                     f"{r['speedup_vs_torch']:>7.2f}x {r['argmax_agreement']:>8.4f}")
    return "\n".join(lines)


@click.command("export-speed", context_settings={"max_content_width": 100})
@click.option("--models", default=",".join(DEFAULT_MODELS), show_default=True, help="Comma-separated networks.")
@click.option("--run", "runs", multiple=True, type=click.Path(exists=True), help="Trained run(s) instead of --models.")
@click.option("--size", type=int, default=256, show_default=True, help="Square input side (ignored with --run).")
@click.option("--iters", type=int, default=50, show_default=True)
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--threads", type=int, default=None, help="Threads for every runtime (default: usable CPUs).")
@click.option("--calib-size", type=int, default=32, show_default=True, help="Training images for INT8 calibration.")
@click.option("--variants", default=",".join(VARIANTS), show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the rows as JSON.")
def main(models: str, runs: tuple[str, ...], size: int, iters: int, warmup: int, threads: int | None,
         calib_size: int, variants: str, json_out: str | None) -> None:
    """Median CPU latency of torch eager and every export variant, as speed-ups over torch.

    \b
    Example:
      python bench/experiments/export_speed.py --models enet --iters 20
    """
    import torch

    from pncd.errors import PncdError
    from pncd.io import versions, write_json

    threads = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
    bad = [v for v in chosen if v not in VARIANTS]
    if bad:
        raise click.UsageError(f"unknown variant(s) {bad}; valid: {', '.join(VARIANTS)}")
    torch.set_num_threads(threads)
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    rows: list[dict[str, Any]] = []
    jobs = [(None, r) for r in runs] if runs else [(m.strip(), None) for m in models.split(",") if m.strip()]
    try:
        for name, run in jobs:
            label, model, data = _model_and_data(name, run, size)
            s = int(data["size"]) if run else size
            rows += bench_one(label, model, data, s, iters, warmup, threads, calib_size, chosen, log)
    except PncdError as e:
        raise click.ClickException(str(e)) from None
    click.echo(render(rows))
    meta = {"threads": threads, "size": size if not runs else None, "batch": 1, "iters": iters, "warmup": warmup,
            "calib_size": calib_size, "cpu": cpu_model(), "machine": platform.machine(), "versions": versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    click.echo(f"\nthreads {threads}, batch 1, {iters} timed iterations after {warmup} warm-up, on {meta['cpu']}")
    if not runs:
        click.echo("untrained weights: 'agree' (argmax agreement with torch) is not an accuracy figure; use --run")
    if json_out:
        write_json(json_out, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
