"""Where an artifact is timed and run: this machine (:class:`LocalSite`) or a Jetson (:class:`JetsonSite`).

A site takes one artifact and the split's images and returns a :class:`Measured`: the latency
fields of its report entry, the label maps of every image, the runtime settings and what ran
(backend, compute precision, power). Torch references always run on this machine
(:meth:`Site.reference`). Local runners are loaded through :func:`pncd.targets.registry.load_runner`;
the Jetson goes through :func:`pncd.targets.jetson.run_on_device`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Protocol

import numpy as np

from pncd.bench import latency as lat
from pncd.bench.artifact import Artifact
from pncd.bench.options import BenchOptions
from pncd.bench.report import latency_fields
from pncd.errors import PncdError

Log = Callable[[str], None]
NO_POWER = {"power_mean_mw": None, "power_source": None, "energy_per_inference_mj": None, "nvpmodel_mode": None,
            "jetson_clocks": None}


@dataclass
class Measured:
    """One artifact (or torch reference) timed and run on a whole split."""

    fields: dict[str, Any]  # latency, first inference, activation, memory: flat report-entry fields
    preds: np.ndarray  # (N, H, W) uint8 label maps
    settings: dict[str, Any]  # the report's ``settings`` of this entry
    where: str  # the entry's ``where``
    info: dict[str, Any] = field(default_factory=dict)  # compute_precision, backend, ..., power fields


class Site(Protocol):
    """Where artifacts are timed (``--device``)."""

    device: str
    latency_what: str  # what an artifact's latency includes, in words
    env: dict[str, Any] | None  # the device's environment once an artifact ran there (else None)

    def check(self, artifact: Artifact) -> None:
        """A PncdError now, before any data is loaded, for an artifact this site cannot run."""

    def measure(self, artifact: Artifact, images: np.ndarray, ident: str) -> Measured:
        """Time ``artifact`` and predict every image."""

    def reference(self, artifact: Artifact, images: np.ndarray, ident: str) -> tuple[str, Measured]:
        """(the device it ran on, the measurement) of the torch model ``artifact`` was exported from."""


class LocalSite:
    """This machine's CPU or CUDA device, in this process."""

    latency_what: str = "end-to-end: numpy in and out"
    env: dict[str, Any] | None = None

    def __init__(self, device: str, options: BenchOptions, threads: int, log: Log) -> None:
        self.device, self.options, self.threads, self.log = device, options, threads, log
        # ident -> (runner factory taking a thread count, artifact, batch-1 input, "artifact" | "reference")
        self.factories: dict[str, tuple[Callable[[int], Any], Artifact, np.ndarray, str]] = {}

    def check(self, artifact: Artifact) -> None:
        from pncd.bench.artifact import requires_vnni
        from pncd.targets.cpu import has_vnni, isa_summary

        if self.device != "cpu" or artifact.precision != "int8":
            return
        if requires_vnni(artifact.manifest) and not has_vnni():
            if not self.options.allow_int8_saturation:
                raise PncdError(f"{artifact.dir}: INT8 with 8-bit weights (exported with --int8-cpu vnni, or before pncd "
                                f"made 7-bit weights the default) computes wrongly on this CPU without VNNI "
                                f"({isa_summary()}): its int16 sums saturate. Re-export it with --int8-cpu any, or pass "
                                "--allow-int8-saturation to measure it anyway")
            self.log(f"warning: {artifact.dir.name}: 8-bit INT8 weights on a CPU without VNNI; its int16 sums may "
                     "saturate (--allow-int8-saturation)")
        elif artifact.runtime == "tensorrt" and not has_vnni():
            self.log(f"note: {artifact.dir.name}: TensorRT's 8-bit INT8 ONNX runs on ONNX Runtime here, on this CPU "
                     "without VNNI with its slower u8 x u8 kernels (session.x64quantprecision), which sum in int32 "
                     "as TensorRT does")

    def local_runtime(self, a: Artifact) -> str | None:
        """TensorRT artifacts on a CPU run their ONNX on ONNX Runtime (TensorRT needs an NVIDIA GPU)."""
        return "onnxruntime" if a.runtime == "tensorrt" and self.device == "cpu" else None

    def measure(self, a: Artifact, images: np.ndarray, ident: str) -> Measured:
        from pncd.targets.registry import load_runner

        self.log(f"[{ident}] {a.target} {a.precision} on {self.device}")
        runtime = self.local_runtime(a)
        if runtime:
            self.log(f"[{ident}] TensorRT needs an NVIDIA GPU: running its ONNX on ONNX Runtime (cpu)")
        def factory(threads: int) -> Any:
            return load_runner(a.dir, device=self.device, runtime=runtime, threads=threads,
                               inference_precision=self.options.inference_precision)

        self.factories[ident] = (factory, a, np.ascontiguousarray(images[:1], dtype=np.float32), "artifact")
        m = self.time(lambda: factory(self.threads), a, images, ident, a.precision, a.static_batch)
        m.info = {"compute_precision": m.settings.get("compute_precision"), "backend": runtime or a.runtime,
                  "backend_reason": "ONNX of a TensorRT artifact on a CPU" if runtime else None,
                  "engine_build_s": None, "engine_from_cache": None, **NO_POWER}
        return m

    def reference(self, a: Artifact, images: np.ndarray, ident: str) -> tuple[str, Measured]:
        from pncd.checkpoint import load_model
        from pncd.targets.torch_runner import TorchRunner

        def factory(threads: int) -> Any:
            # the very weights the artifact was exported from (its manifest's source.checkpoint)
            model, _cfg = load_model(a.reference_checkpoint() or a.source_run, device="cpu")
            return TorchRunner(model, input_name=a.input_name, output_name=a.output_name, device=self.device,
                               threads=threads)

        self.factories[ident] = (factory, a, np.ascontiguousarray(images[:1], dtype=np.float32), "reference")
        self.log(f"[{ident}] torch reference on {self.device}")
        m = self.time(lambda: factory(self.threads), a, images, ident)
        m.info = {"compute_precision": m.settings.get("compute_precision"), "backend": "torch",
                  "backend_reason": None, "engine_build_s": None, "engine_from_cache": None, **NO_POWER}
        return self.device, m

    def time(self, make_runner: Callable[[], Any], a: Artifact, images: np.ndarray, ident: str,
             precision: str = "fp32", static_batch: int | None = None) -> Measured:
        """Activate the runner, time it, predict every image with it, deactivate it."""
        from pncd.scoring import predict
        from pncd.targets.cpu import compute_precision

        desc = ident if self.options.progress else None
        runner, m = lat.measure(make_runner, a.input_name, a.output_name, images, self.options,
                                static_batch=static_batch, desc=desc)
        try:
            preds = predict(lat.infer_fn(runner, a.input_name, a.output_name), images, self.options.accuracy_batch,
                            single_fallback=True, desc=desc)
            settings = dict(getattr(runner, "settings", None) or {})
            settings.setdefault("runner", type(runner).__name__)
            settings["compute_precision"] = compute_precision(runner, precision)
            tput = _async_throughput(runner, a.input_name, images, self.options.iters)
        finally:
            runner.deactivate()
        timing = {"b1": lat.summarize(m["b1_raw"]),
                  "batch": lat.summarize(m["batch_raw"]) if "error" not in m["batch_raw"] else m["batch_raw"]}
        out = {**latency_fields(timing), "first_inference_ms": m["first_inference_ms"],
               "activation_s": m["activation_s"], "mem_rss_peak_growth_mib": m["memory"]["rss_peak_growth_mib"],
               "mem_rss_delta_mib": m["memory"]["rss_delta_mib"],
               "async_throughput_ips": tput.get("throughput_ips"), "async_requests": tput.get("requests")}
        return Measured(fields=out, preds=preds, settings=settings, where=self.device)


    def interleave(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """Time every runner measured so far again, in interleaved rounds (:mod:`pncd.bench.interleave`);
        the torch reference with 1 thread and with the bench's count, the faster one kept.
        Returns (per entry id: the interleaved figures, the machine's load record)."""
        from pncd.bench import interleave as il

        o = self.options
        timed: list[il.Timed] = []
        runners: list[Any] = []
        variants: dict[str, list[tuple[str, int]]] = {}
        try:
            for ident, (factory, a, x, kind) in self.factories.items():
                counts = sorted({1, self.threads}) if kind == "reference" and self.device == "cpu" else [self.threads]
                variants[ident] = [(f"{ident}@{n}", n) for n in counts]
                for name, n in variants[ident]:
                    r = factory(n).activate()
                    runners.append(r)
                    before = _torch_threads(n) if kind == "reference" else None
                    timed.append(il.Timed(name, lat.infer_fn(r, a.input_name, a.output_name), x, before))
            per_round = max(5, o.iters // max(1, o.interleave_rounds))
            self.log(f"timing {len(timed)} runners in {o.interleave_rounds} interleaved rounds of {per_round} iterations")
            machine = il.run_rounds(timed, o.interleave_rounds, per_round, min(o.warmup, 5))
        finally:
            for r in runners:
                r.deactivate()
        stats = {t.ident: il.runner_stats(t, machine) for t in timed}
        out: dict[str, dict[str, Any]] = {}
        for ident, names in variants.items():
            best_name, best_n = min(names, key=lambda v: stats[v[0]]["median_ms"])
            out[ident] = {**stats[best_name], "threads": best_n,
                          "threads_tried": {str(n): stats[name]["median_ms"] for name, n in names}}
        return out, machine


def _torch_threads(n: int) -> Callable[[], None]:
    def apply() -> None:
        import torch

        torch.set_num_threads(n)

    return apply


class JetsonSite:
    """A Jetson: over SSH with ``--host``, else this machine when it is the Jetson. The torch
    references run on this machine's CPU."""

    device: str = "jetson"
    latency_what: str = "end-to-end: numpy in and out on the device"

    def __init__(self, options: BenchOptions, threads: int, log: Log) -> None:
        from pncd.targets.ssh import check_host, normalize_options

        normalize_options(options.ssh_options)  # one line now, not after the data has loaded
        if options.host is not None:
            check_host(options.host)
        self.options, self.log = options, log
        self.here = LocalSite("cpu", options, threads, log)
        self.env: dict[str, Any] | None = None

    def check(self, a: Artifact) -> None:
        if a.onnx is None:
            raise PncdError(f"{a.dir}: the Jetson path runs ONNX, and this {a.target} artifact has no .onnx "
                            "file; export with --target tensorrt or onnxruntime")

    def reference(self, a: Artifact, images: np.ndarray, ident: str) -> tuple[str, Measured]:
        device, m = self.here.reference(a, images, ident)
        m.where = "host"
        return device, m

    def measure(self, a: Artifact, images: np.ndarray, ident: str) -> Measured:
        from pncd.targets.jetson import run_on_device

        assert a.onnx is not None  # check() refused it otherwise
        o = self.options
        self.log(f"[{ident}] {a.onnx.name} on the Jetson {o.host or '(this machine)'}")
        run = run_on_device(a.onnx, images, a.precision, jetson_options(o), log=self.log)
        r = run.result
        self.env = self.env or r.get("env")
        timing = {"b1": lat.summarize(r["latency_b1"]),
                  "batch": lat.summarize(r["latency_batch"]) if "error" not in r["latency_batch"] else r["latency_batch"]}
        mem = r.get("memory") or {}
        growth = (mem["ru_maxrss_after_kb"] - mem["ru_maxrss_before_kb"]) / 1024.0 if mem else None
        power = r.get("power") or {}
        source = power.get("power_source")
        out = {**latency_fields(timing), "first_inference_ms": r.get("first_inference_ms"),
               "activation_s": r.get("activation_s"), "mem_rss_peak_growth_mib": growth, "mem_rss_delta_mib": None}
        info = {"compute_precision": f"{a.precision} on {r['backend']}", "backend": r["backend"],
                "backend_reason": r.get("backend_reason"), "engine_build_s": r.get("engine_build_s"),
                "engine_from_cache": (r.get("settings") or {}).get("engine_from_cache"),
                "power_mean_mw": power.get("power_mean_mw"),
                "power_source": ",".join(source) if isinstance(source, list) else source,
                "energy_per_inference_mj": power.get("energy_per_inference_mj"),
                "nvpmodel_mode": (r.get("nvpmodel") or {}).get("mode"),
                "jetson_clocks": ((r.get("env") or {}).get("clocks") or {}).get("jetson_clocks")}
        settings = {**(r.get("settings") or {}), "device": {**run.where, "env": r.get("env")},
                    "power": power or None, "nvpmodel": r.get("nvpmodel")}
        return Measured(fields=out, preds=run.preds, settings=settings, where="jetson", info=info)


def jetson_options(o: BenchOptions) -> Any:
    """The Jetson runner's options: the fields it shares with :class:`BenchOptions` by name, and
    the two the bench names for the device (``--remote-backend``, ``--engine-cache``)."""
    from pncd.targets.jetson import JetsonOptions

    shared = {f.name: getattr(o, f.name) for f in fields(JetsonOptions) if f.name in BenchOptions.__dataclass_fields__}
    return JetsonOptions(**shared, backend=o.remote_backend, cache_dir=o.engine_cache)


def make_site(o: BenchOptions, threads: int, log: Log) -> Site:
    """The site ``o.device`` names (its checks of host and SSH options run now)."""
    return JetsonSite(o, threads, log) if o.device == "jetson" else LocalSite(o.device, o, threads, log)


def _async_throughput(runner: Any, input_name: str, images: np.ndarray, count: int) -> dict[str, Any]:
    """The runtime's throughput mode where it has one (OpenVINO: asynchronous requests, see
    :meth:`pncd.targets.openvino_rt.OpenVinoRunner.throughput`); {} elsewhere or when it fails
    (the latency figures stand on their own)."""
    measure = getattr(runner, "throughput", None)
    if measure is None:
        return {}
    try:
        return measure({input_name: np.ascontiguousarray(images[:1], dtype=np.float32)}, count=max(16, count))
    except Exception as e:  # noqa: BLE001 - a second column, never a reason to lose the bench
        return {"error": str(e).splitlines()[0][:200] if str(e) else type(e).__name__}
