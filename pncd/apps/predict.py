"""``pncd predict``: a mask for each image or NIfTI volume, from a training run or an exported artifact.

MODEL is a run folder (``pncd train`` / ``pncd distill``: its best checkpoint, else its last, as
``pncd eval`` and ``pncd export`` pick it; run by torch) or an artifact folder (``pncd export``),
run as ``pncd bench`` runs it: read and its files verified against its manifest
(:class:`pncd.bench.artifact.Artifact`), refused on a CPU it computes wrongly on, loaded by
:func:`pncd.targets.registry.load_runner` (a TensorRT artifact on a CPU runs its ONNX on ONNX
Runtime, :meth:`pncd.bench.sites.LocalSite.local_runtime`).

Each input is preprocessed exactly as training and ``pncd eval`` read a data set, by the data
spec of the run (its ``config.json``) or of the artifact (its manifest's ``data``): slices along
a volume's last axis, gray and RGB converted to the model's channels
(:mod:`pncd.apps.predict_files`), resized to the run's size (bilinear, antialiased) and
normalised per slice (:mod:`pncd.data.preprocess`). An artifact exported at another input size
(``pncd export --input-size``) is fed as its export checked it
(:func:`pncd.export.calibration.load_images`). The argmax labels are resized back to the
input's size with nearest neighbour ("nearest-exact", as training resizes masks), the inverse of
the preprocessing. ``size_policy="native"`` skips both resizes: each slice runs at its own size,
which a run takes when its sides are multiples of the network's (16 for most), an artifact only
at the size it was exported with.

Slices are batched across files (``batch``). Every input is checked (exists, readable header,
channels the model takes, a size the policy allows) before anything is loaded or written; the
masks and ``predictions.json`` are written into a temporary folder beside ``out`` and moved into
place at the end (:func:`pncd.io.atomic_dir`), so a failure leaves no mask, half or whole, in
``out``. ``out`` must be new, empty, or a folder an earlier ``pncd predict`` wrote (its pncd
marker of kind ``predictions``: that predict's masks are replaced); never an input, the model,
or the data set the model was trained on.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pncd.apps import predict_files as files
from pncd.errors import PncdError
from pncd.optspec import cli, values_from

RESULTS = "predictions.json"
KIND = "predictions"
SCHEMA = "pncd-predictions/1"
SIZE_POLICIES = ("resize", "native")
DEVICES = ("auto", "cpu", "cuda")
Log = Callable[[str], None]


@dataclass(kw_only=True)
class PredictOptions:
    """Options of ``pncd predict`` (its flags, plus ``progress``)."""

    out: str | Path = field(metadata=cli(
        "Folder for the masks and predictions.json: new, empty, or one an earlier pncd predict wrote (its masks "
        "are replaced), e.g. --out masks/enet.", path="any", required=True))
    batch: int = field(default=8, metadata=cli(
        "Slices per inference call, gathered across files, e.g. --batch 16 (an artifact exported with a fixed "
        "batch of 1 takes one at a time).", low=1))
    threads: int | None = field(default=None, metadata=cli(
        "Intra-op threads of torch and of the runtime, e.g. --threads 1 when other jobs share the cores "
        "(default: the physical cores).", low=1))
    device: str = field(default="auto", metadata=cli(
        "Where the model runs, e.g. --device cpu. auto: a run on CUDA when visible, a TensorRT artifact on CUDA "
        "when visible (else its ONNX on ONNX Runtime), other artifacts on the CPU.", choices=DEVICES))
    size_policy: str = field(default="resize", metadata=cli(
        "resize: each slice resized to the model's input size as in training, the mask resized back (nearest); "
        "native: run each slice at its own size (a run whose network takes it; an artifact only at its exported "
        "size), e.g. --size-policy native.", choices=SIZE_POLICIES))
    progress: bool = True  # a bar on a terminal, else a line per file on stderr (Python callers may turn it off)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PredictOptions:
        """Options from click's parameters (others ignored)."""
        return cls(**values_from(cls, params))


@dataclass
class Model:
    """What predict runs and how it feeds it: :func:`read_model` fills what the files say (no
    torch, no runtime), :func:`load_model` the rest (the runner, the device, the batch)."""

    path: Path
    kind: str  # "run" or "artifact"
    name: str | None
    spec: Any  # pncd.data.DataSpec: size, channels, normalization, num_classes, root
    input_hw: tuple[int, int]  # the input size it is fed (resize policy)
    protect: tuple[Path, ...] = ()  # folders --out must not be
    artifact: Any = None  # pncd.bench.artifact.Artifact, for an artifact
    runtime: str = "torch"
    precision: str = "fp32"
    device: str = "cpu"
    size_multiple: int = 0  # native sizes must be multiples of this; 0: only ``input_hw``
    batch: int = 1  # slices per call
    input_name: str = "image"
    output_name: str = "logits"
    make_runner: Callable[[], Any] | None = None
    record: dict[str, Any] = field(default_factory=dict)  # predictions.json "model"

    @property
    def label(self) -> str:
        return f"{self.path} ({self.name or 'the model'})"


def read_model(path: Path) -> Model:
    """MODEL as its files describe it: a run (config.json) or an artifact (manifest.json, its
    files verified against their SHA-256 as pncd bench verifies them); one line for anything else."""
    from pncd.data.spec import DataSpec
    from pncd.targets.registry import find_manifest

    if not path.exists():
        raise PncdError(f"{path}: MODEL not found; pass the --out folder of pncd train, pncd distill or pncd export "
                        "(nothing was written)")
    run_dir = path.parent if path.is_file() and path.suffix == ".safetensors" else path
    if run_dir.is_dir() and (run_dir / "config.json").is_file():
        from pncd.io import read_json

        cfg = read_json(run_dir / "config.json")
        data, net = (cfg.get("data"), cfg.get("model")) if isinstance(cfg, dict) else (None, None)
        if not isinstance(data, dict) or not data or not isinstance(net, dict):
            raise PncdError(f"{run_dir / 'config.json'}: no data spec or model (not a pncd run, or damaged); pass the "
                            "--out folder of pncd train or pncd distill (nothing was written)")
        spec = DataSpec.from_dict(data)
        return Model(path, "run", net.get("name"), spec, (spec.size, spec.size), (run_dir,))
    if find_manifest(path) is None:
        raise PncdError(f"{path}: neither a training run (no config.json) nor an exported artifact (no manifest.json); "
                        "pass the --out folder of pncd train, pncd distill or pncd export (nothing was written)")
    from pncd.bench.artifact import Artifact

    from pncd.export.manifest import check_files, claim_problem

    a = Artifact.read(path)
    # as the bench verifies it: its files against the SHA-256 in its manifest, its precision against its graph
    problems = check_files(a.dir, a.manifest) or [p for p in [claim_problem(a.dir, a.manifest)] if p]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PncdError(f"{a.folder}: {problems[0]}{more}; re-export the artifact (nothing was written)")
    spec = DataSpec.from_dict(a.data)
    shape = (a.manifest.get("input") or {}).get("shape") or []
    hw = tuple(shape[2:4]) if len(shape) == 4 and all(isinstance(n, int) for n in shape[2:4]) else (spec.size,) * 2
    return Model(path, "artifact", a.model, spec, (int(hw[0]), int(hw[1])), (a.dir, a.source_run), a,
                 input_name=a.input_name, output_name=a.output_name)


def load_model(model: Model, o: PredictOptions, threads: int, log: Log) -> Model:
    """``model`` with its runner (inactive), device, batch and record: the run's network on
    torch, or the artifact on its runtime as pncd bench runs it."""
    return _load_run(model, o, threads, log) if model.kind == "run" else _load_artifact(model, o, threads, log)


def _load_run(model: Model, o: PredictOptions, threads: int, log: Log) -> Model:
    from pncd.checkpoint import load_run
    from pncd.rundir import incomplete_warning, run_progress
    from pncd.runtime import resolve_device
    from pncd.targets.onnx_export import INPUT_NAME, OUTPUT_NAME
    from pncd.targets.torch_runner import TorchRunner

    path = model.path
    device = str(resolve_device(o.device))
    loaded = load_run(path, "best", "cpu")  # best, else last: the checkpoint pncd eval and pncd export load
    stopped = incomplete_warning(path, run_progress(model.protect[0], loaded.cfg), "predicting with")
    if stopped:
        log(stopped)
    net = loaded.model
    model.runtime, model.precision, model.device, model.batch = "torch", "fp32", device, o.batch
    model.size_multiple = max(16, int(getattr(net, "size_multiple", 16)))
    model.input_name, model.output_name = INPUT_NAME, OUTPUT_NAME
    model.make_runner = lambda: TorchRunner(net, INPUT_NAME, OUTPUT_NAME, device=device, threads=threads)
    model.record = {"kind": "run", "name": model.name, "runtime": "torch", "precision": "fp32", "device": device,
                    "checkpoint": loaded.checkpoint.name, "checkpoint_sha256": loaded.checkpoint_sha256}
    return model


def _load_artifact(model: Model, o: PredictOptions, threads: int, log: Log) -> Model:
    from pncd.bench.options import BenchOptions
    from pncd.bench.sites import LocalSite
    from pncd.targets.onnx_export import MAX_DYNAMIC_BATCH
    from pncd.targets.registry import load_runner

    a = model.artifact
    device = artifact_device(a.runtime, o.device)
    site = LocalSite(device, BenchOptions(threads=threads), threads, log)
    site.check(a)  # INT8 that computes wrongly on this CPU is refused, as pncd bench refuses it
    runtime = site.local_runtime(a)
    if runtime:
        log(f"{a.folder}: TensorRT needs an NVIDIA GPU: running its ONNX on ONNX Runtime (cpu)")
    model.runtime, model.precision, model.device = runtime or a.runtime, a.precision, device
    model.batch = a.static_batch or min(o.batch, MAX_DYNAMIC_BATCH)
    model.make_runner = lambda: load_runner(a.dir, device=device, runtime=runtime, threads=threads)
    model.record = {"kind": "artifact", "name": a.model, "target": a.target, "runtime": model.runtime,
                    "precision": a.precision, "device": device,
                    "checkpoint": (a.manifest.get("source") or {}).get("checkpoint"),
                    "checkpoint_sha256": a.checkpoint_sha256}
    return model


def artifact_device(runtime: str, device: str) -> str:
    """Where an artifact runs: ``auto`` is CUDA for a TensorRT artifact where CUDA is visible, else the CPU."""
    if device != "auto":
        return device
    if runtime != "tensorrt":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_size(item: files.Input, model: Model, policy: str) -> None:
    """A slice size the policy and the model allow, or one line naming the file."""
    if policy != "native":
        return
    h, w = item.hw
    if model.size_multiple == 0 and (h, w) != model.input_hw:
        raise PncdError(f"{item.path}: slices of {h}x{w} with --size-policy native, but {model.label} was exported "
                        f"for {model.input_hw[0]}x{model.input_hw[1]} only; use --size-policy resize (nothing was written)")
    m = model.size_multiple
    if m and (h % m or w % m):
        raise PncdError(f"{item.path}: slices of {h}x{w} with --size-policy native, but {model.label} takes sides "
                        f"divisible by {m} only; use --size-policy resize (nothing was written)")


def preprocess(x: np.ndarray, model: Model, policy: str) -> np.ndarray:
    """Raw ``(S, C, H, W)`` -> what the model is fed: resized and normalised as the data layer
    does (:func:`pncd.data.preprocess.preprocess`), at the input size the export checked."""
    from pncd.data.preprocess import normalize, resize_images

    norm = model.spec.normalization
    if policy == "native":
        return normalize(np.ascontiguousarray(x, dtype=np.float32), norm)
    h, w = model.input_hw
    if h == w:
        return normalize(resize_images(x, h), norm)
    import torch
    import torch.nn.functional as F

    x = normalize(resize_images(x, model.spec.size), norm)  # export.calibration.load_images: then to HxW
    return F.interpolate(torch.from_numpy(x), size=(h, w), mode="bilinear", align_corners=False).numpy()


def check_out(out: Path, model: Model, inputs: Sequence[str | os.PathLike], names: list[str]) -> None:
    """Refuse an --out that is (or holds) an input, the model or its data set, lies inside the
    data set, is a data set, or is not new, empty or an earlier predict's (:func:`pncd.io.check_output`)."""
    from pncd.io import check_output, is_dataset

    target = out.resolve()
    root = model.spec.root
    for src in [*map(Path, inputs), *model.protect, *([Path(root)] if root else [])]:
        s = src.resolve()
        if s == target or target in s.parents:
            raise PncdError(f"--out {out} is {'' if s == target else 'a folder holding '}{src}, which predict reads "
                            "(an input, the model or its data set); choose another --out (nothing was written)")
    if root and target.is_relative_to(Path(root).resolve()):
        raise PncdError(f"--out {out} lies inside the data set {root} the model was trained on; choose a folder "
                        "outside it (nothing was written)")
    if out.is_dir() and is_dataset(out):
        raise PncdError(f"--out {out} is a data set; choose another --out (nothing was written)")
    check_output(out, True, names=names, kind=KIND)


def predict_files(model: Model, items: list[files.Input], o: PredictOptions, folder: Path, log: Log) -> list[dict]:
    """Predict every input (slices batched across files), write each mask into ``folder`` and
    return the rows of predictions.json."""
    from pncd.bench.latency import infer_fn

    if model.make_runner is None:
        raise ValueError("load_model() the model first")
    rows: list[dict] = []
    bar = files.Progress(len(items), log, o.progress)
    runner = model.make_runner().activate()
    try:
        infer = infer_fn(runner, model.input_name, model.output_name)
        group: list[tuple[files.Input, np.ndarray]] = []
        for i, item in enumerate(items):
            group.append((item, preprocess(files.read(item, model.spec.channels), model, o.size_policy)))
            if sum(len(x) for _, x in group) >= model.batch or i + 1 == len(items):
                for it, labels in _labels(infer, group, model.batch):
                    rows.append(_write(it, files.restore(labels, it.hw), model, folder, bar))
                group = []
    finally:
        runner.deactivate()
        bar.close()
    return rows


def _labels(infer: Callable[[np.ndarray], np.ndarray], group: list[tuple[files.Input, np.ndarray]],
            batch: int) -> list[tuple[files.Input, np.ndarray]]:
    """(input, label maps) of each file of ``group``, their slices predicted together (file by
    file where native slice sizes differ), by :func:`pncd.scoring.predict` as the bench does."""
    from pncd.scoring import predict

    if len({x.shape[1:] for _, x in group}) > 1:
        return [(it, predict(infer, x, batch, single_fallback=True)) for it, x in group]
    preds = predict(infer, np.concatenate([x for _, x in group]), batch, single_fallback=True)
    bounds = np.cumsum([0] + [len(x) for _, x in group])
    return [(it, preds[lo:hi]) for (it, _), lo, hi in zip(group, bounds[:-1], bounds[1:])]


def _write(item: files.Input, labels: np.ndarray, model: Model, folder: Path, bar: files.Progress) -> dict[str, Any]:
    shape = files.write(item, labels, folder)
    bar.step(item, shape)
    return {"input": item.name, "output": item.output, "format": "nifti" if item.nifti else item.output.rsplit(".")[-1],
            "shape": shape, "slices": int(len(labels)),
            "voxels": files.voxels(labels, model.spec.num_classes), "model": model.name, "runtime": model.runtime,
            "precision": model.precision}


def run_predict(model_path: str | os.PathLike, inputs: Sequence[str | os.PathLike], o: PredictOptions,
                log: Log | None = None) -> dict[str, Any]:
    """Masks of ``inputs`` by the model at ``model_path`` into ``o.out``; returns what
    predictions.json holds. Bad input (a missing or unreadable file, channels or a size the
    model does not take, an --out it may not write) fails in one line before anything is written."""
    from pncd.io import atomic_dir, write_json
    from pncd.outlock import out_lock

    log = log or _stderr
    out, path = Path(o.out), Path(model_path)
    if not inputs:
        raise PncdError(f"no INPUT given; pass {files.KINDS_SAID}")
    model = read_model(path)
    items = [files.probe(it) for it in files.collect(list(inputs))]
    files.check_names(items, out)
    for it in items:
        files.check_channels(it, model.spec.channels, model.label)
        if model.kind == "artifact":
            check_size(it, model, o.size_policy)
    names = [it.output for it in items] + [RESULTS]
    check_out(out, model, inputs, names)
    from pncd.runtime import apply_threads  # torch from here on

    threads = apply_threads(o.threads, echo=False)
    load_model(model, o, threads, log)
    for it in items:
        check_size(it, model, o.size_policy)
    size = "each slice at its own size" if o.size_policy == "native" else "input {}x{}".format(*model.input_hw)
    log(f"predict: {len(items)} file(s) with {model.label}: {model.runtime} {model.precision} on {model.device}, "
        f"{size}, batch {model.batch}, threads {threads}")
    with out_lock(out, "pncd predict"), atomic_dir(out, force=True, names=names, kind=KIND) as tmp:
        rows = predict_files(model, items, o, tmp, log)
        result = _result(model, o, threads, rows)
        write_json(tmp / RESULTS, result)
    return result


def _result(model: Model, o: PredictOptions, threads: int, rows: list[dict]) -> dict[str, Any]:
    """What predictions.json holds: no absolute path of an input (names relative to the arguments)."""
    from pncd import __version__

    s = model.spec
    return {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pncd_version": __version__,
            "model": {"path": str(model.path), **model.record,
                      "input": [s.channels, *model.input_hw],
                      "preprocessing": {"size": s.size, "channels": s.channels, "normalization": s.normalization,
                                        "num_classes": s.num_classes, "slices": "last axis of a volume",
                                        "size_policy": o.size_policy}},
            "options": {"batch": o.batch, "threads": threads, "device": o.device, "size_policy": o.size_policy},
            "mask_values": "class index (0 background, 1 the first class, ...)",
            "predictions": rows}


def _stderr(msg: str) -> None:
    from pncd.console import warn

    warn(msg)
