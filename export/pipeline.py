"""``export_run``: a run directory -> one checked artifact directory with its manifest.

Order of work (everything that can fail on bad input fails before anything is written), all
under the lock of ``--out`` (:mod:`pncd.outlock`: a second export or bench into it is refused):

1. check the target/precision pair and the options; refuse an existing ``--out`` without
   ``--force``; import the target's runtime (a missing one names the package to install);
2. load the run (``config.json`` + checkpoint, each read once: the manifest records the SHA-256
   of the bytes loaded, :mod:`pncd.export.source`) and the images: held-out images for parity,
   training images for INT8 calibration;
3. in a temporary directory (``pncd.io.atomic_dir``): export the FP32 ONNX, build the target's
   files, run them on their real runtime against torch, apply the checks, write
   ``manifest.json``; rename into place only if all of that succeeded.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable


from pncd.data.images import ImageSet
from pncd.console import heartbeat, warn
from pncd.errors import PncdError
from pncd.export import calibration as cal
from pncd.export import parity
from pncd.targets.graph_rewrite import rewrite_file
from pncd.export.manifest import MANIFEST
from pncd.export.options import INT8_CPUS, ExportOptions
from pncd.export.source import SIZE_MULTIPLE
from pncd.export.source import Source as _Source
from pncd.export.shared_onnx import take as take_shared_onnx
from pncd.export.source import load_source as _load_source
from pncd.targets.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from pncd.export.sensitivity import check_artifact, ends_of, float_plan
from pncd.targets.base import BuildResult, BuildSpec, require
from pncd.targets.cpu import compute_precision
from pncd.targets.cpu import isa_summary as cpu_summary
from pncd.targets.registry import check_pair


INT8_PARITY_MAX = 512  # held-out images INT8's parity check takes by default (all of a split this size)
CPU_INT8_TARGETS = ("onnxruntime", "openvino")  # INT8 that runs on an x86 CPU (u8 x s8 kernels)


def int8_portable(flags) -> bool:
    """Whether a CPU target's INT8 keeps 7-bit weights (``--int8-cpu any``, the default): correct
    on x86 CPUs without VNNI, where 8-bit weights saturate the int16 pair sums (pncd.targets.cpu)."""
    return getattr(flags, "int8_cpu", None) != "vnni"


def cpu_int8_record(target: str, build: dict[str, Any], qat: dict[str, Any] | None) -> dict[str, Any]:
    """What CPUs an INT8 artifact computes correctly on (manifest ``build.quantization``):
    ``weight_bits`` and ``requires_vnni`` (True: 8-bit weights on a CPU runtime, which saturate
    without VNNI; pncd bench refuses such an artifact on a CPU without VNNI). None for a GPU target."""
    bits = int(qat.get("weight_bits", 8) if qat is not None else build.get("weight_bits", 8))
    if target not in CPU_INT8_TARGETS:
        return {"weight_bits": bits, "requires_vnni": None, "cpus": "NVIDIA GPUs (TensorRT computes in int32)"}
    return {"weight_bits": bits, "requires_vnni": bits > 7,
            "cpus": "every x86 CPU (7-bit weights: no int16 saturation without VNNI)" if bits <= 7
            else "x86 CPUs with VNNI or AMX (8-bit weights saturate int16 sums on AVX2 / AVX-512 without VNNI)"}


def validate(opts: ExportOptions, protect: tuple[str | Path | None, ...] = ()) -> None:
    """Option errors that need no files, and ``--out`` (``protect``: the run it must not
    replace): one PncdError line each."""
    check_pair(opts.target, opts.precision)
    if opts.calib_method not in cal.CALIB_METHODS:
        raise PncdError(f"--calib-method {opts.calib_method!r} is unknown; use one of {', '.join(cal.CALIB_METHODS)}")
    if not 0.0 < opts.max_dice_drop < 1.0:
        raise PncdError(f"--max-dice-drop {opts.max_dice_drop} is invalid; use an absolute Dice drop in (0, 1), e.g. 0.01")
    from pncd.targets.onnxrt_build import KEEP_FLOAT_CHOICES

    bad = [k for k in opts.keep_float if k not in KEEP_FLOAT_CHOICES + ("auto",)]
    if bad:
        raise PncdError(f"--keep-float {','.join(bad)!r} is unknown; use first, last, first,last, none or auto")
    _validate_target_flags(opts)
    _validate_sensitivity(opts)
    if opts.ov_preset not in (None, "performance", "mixed"):
        raise PncdError(f"--ov-preset {opts.ov_preset!r} is unknown; use performance or mixed")
    if opts.ov_rounding is not None:
        from pncd.targets.openvino_build import check_rounding

        check_rounding(opts.ov_rounding, opts.accuracy_control)
    if opts.ac_images < 0:
        raise PncdError(f"--ac-images {opts.ac_images} is invalid; use 0 (the whole val split) or a positive count")
    from pncd.targets.cpu import INFERENCE_PRECISIONS

    if opts.inference_precision not in INFERENCE_PRECISIONS:
        raise PncdError(f"--inference-precision {opts.inference_precision!r} is unknown; use one of "
                        f"{', '.join(INFERENCE_PRECISIONS)}")
    if opts.int8_cpu is not None:
        if opts.int8_cpu not in INT8_CPUS:
            raise PncdError(f"--int8-cpu {opts.int8_cpu!r} is unknown; use any or vnni")
    if opts.parity_images < 0:
        raise PncdError(f"--parity-images {opts.parity_images} is invalid; use 0 (automatic) or a positive count")
    if opts.input_size is not None:
        h, w = opts.input_size
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise PncdError(f"--input-size {h}x{w} is invalid: the networks need sides divisible by "
                            f"{SIZE_MULTIPLE} (e.g. {h // SIZE_MULTIPLE * SIZE_MULTIPLE or SIZE_MULTIPLE}x"
                            f"{w // SIZE_MULTIPLE * SIZE_MULTIPLE or SIZE_MULTIPLE})")
    if opts.calib_data is not None:  # before any image is loaded
        if opts.precision != "int8":
            raise PncdError(f"--calib-data applies to --precision int8 only (this export is {opts.precision})")
        from pncd.data.layout import discover

        try:
            discover(opts.calib_data)  # a missing directory or one with no data set: one line, now
        except PncdError as e:
            raise PncdError(f"--calib-data: INT8 needs calibration images, but no train split was found in "
                            f"{opts.calib_data} ({e}); pass --calib-data DIR with training images") from None
    from pncd.io import check_output

    # exists without --force, a file, what the export reads, or (--force) a folder pncd does not own
    check_output(opts.out, opts.force, protect=protect, names=(MANIFEST,), kind="export")


def _validate_sensitivity(opts: ExportOptions) -> None:
    auto = "auto" in opts.keep_float
    if (auto or opts.sensitivity) and opts.precision != "int8":
        raise PncdError(f"--{'keep-float auto' if auto else 'sensitivity'} applies to --precision int8 only "
                        f"(this export is {opts.precision})")
    if auto and not check_pair(opts.target, opts.precision).takes("sensitivity", "int8"):
        raise PncdError(f"--keep-float auto applies to {_takers('sensitivity')} only (not {opts.target})")
    if auto and opts.accuracy_control:
        raise PncdError("--keep-float auto and --accuracy-control both choose the float layers; use one")


# target-specific options of ExportOptions and the value that means "not given"
TARGET_FLAGS: dict[str, Any] = {"accuracy_control": False, "ac_images": 0, "ov_preset": None, "ov_rounding": None,
                                "int8_cpu": None, "sensitivity": False, "inference_precision": "auto"}


def _takers(flag: str) -> str:
    """``--target A or B --precision P``: the registered targets that take ``flag``, and where."""
    from pncd.targets.registry import TARGETS

    takers = {name: tuple(p for n, ps in TARGETS.get(name).flags if n == flag for p in ps) for name in TARGETS}
    takers = {n: ps for n, ps in takers.items() if ps}
    names = sorted(takers)
    said = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)
    precs = set(takers.values())
    if len(precs) == 1 and len(next(iter(precs))) == 1:
        return f"--target {said} --precision {next(iter(precs))[0]}"
    return f"--target {said}"


def _validate_target_flags(opts: ExportOptions) -> None:
    """Every target-specific option given is one the target takes at this precision (its
    :attr:`~pncd.targets.base.Target.flags`), or one line naming the targets that take it."""
    target = check_pair(opts.target, opts.precision)
    for flag, unset in TARGET_FLAGS.items():
        if getattr(opts, flag) != unset and not target.takes(flag, opts.precision):
            raise PncdError(f"--{flag.replace('_', '-')} applies to {_takers(flag)} only "
                            f"(this export is {opts.target} {opts.precision})")


def require_runtime(target: str, precision: str) -> None:
    """Import the target's conversion tools up front: a missing one says what to install."""
    check_pair(target, precision).require(precision)
    require("onnxruntime", "onnxruntime", f"the {target} target (parity and quantization run on it)")


def _load_images(opts: ExportOptions, src: _Source, log: Callable[[str], None]):
    """(held-out images for parity, calibration images or None, validation images for accuracy control)."""
    # INT8's check is a Dice ratio over cases: with a few slices per case one flipped small lesion
    # swings it by percents (a converged ENet read 87.6% on 32 val images, 100.3% on all 338), so
    # INT8 checks the whole split, up to INT8_PARITY_MAX images spread evenly over it (memory).
    n_parity = opts.parity_images or (INT8_PARITY_MAX if opts.precision == "int8" else 32)
    held = cal.held_out_images(src.data, n_parity, src.size)
    log(f"parity check on {len(held.images)} held-out images (of {held.total} in the {held.split} split)")
    calib = None
    if src.qdq_onnx is not None:
        log(f"INT8 from quantization-aware training: {src.qdq_onnx} is used as it is (no calibration)")
    elif opts.precision == "int8":
        calib = cal.calibration_images(src.data, opts.calib_size, src.size, opts.calib_data)
        log(f"INT8 calibration on {len(calib.images)} training images (--calib-size {opts.calib_size}; "
            f"{calib.total} in the {calib.split} split)")
    validation = held
    if opts.accuracy_control:
        validation = cal.held_out_images(src.data, opts.ac_images or 10**9, src.size)
        log(f"accuracy control on {len(validation.images)} held-out images")
    return held, calib, validation


def _check_parity(built: BuildResult, opts: ExportOptions, ref, held: ImageSet, num_classes: int,
                  log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Run each parity runner over the held-out images, compare with torch, apply the checks."""
    batch = opts.parity_batch if opts.dynamic_batch else 1
    results = {}
    for label, runner in built.parity_runners:
        out = parity.runner_logits(runner, INPUT_NAME, OUTPUT_NAME, held.images, batch, desc=f"parity {label}")
        used = compute_precision(runner, opts.precision)
        runner.deactivate()
        res = parity.compare(ref, out, held.masks, held.case_ids, num_classes)
        res.update(runtime=label, split=held.split, data_root=held.root, split_size=held.total,
                   inference_precision=used)
        if getattr(runner, "int32_sums", False):  # TensorRT's INT8 ONNX on ONNX Runtime (targets.onnxrt)
            from pncd.targets.onnxrt import X64_QUANT_PRECISION

            res["onnxruntime_session_config"] = {X64_QUANT_PRECISION: "1"}
        res["check"] = parity.check(opts.precision, res, opts.strict, what=f"the {opts.target} {opts.precision} export")
        results[label] = res
    for w in (w for r in results.values() for w in r["check"]["warnings"]):
        log(f"warning: {w}")
    return results


def export_run(run: str | Path, opts: ExportOptions, log: Callable[[str], None] | None = None,
               options: dict[str, Any] | None = None, command: str | None = None) -> dict[str, Any]:
    """Export ``run`` as ``opts`` says; returns the manifest written to ``opts.out``. Holds the
    lock of ``--out`` throughout (:func:`pncd.outlock.out_lock`, as train and distill do): a
    second export or bench into the same folder is refused at once, in one line."""
    from pncd.outlock import out_lock

    with out_lock(opts.out, "pncd export"):
        return _export_run(run, opts, log, options, command)


def _export_run(run: str | Path, opts: ExportOptions, log: Callable[[str], None] | None,
                options: dict[str, Any] | None, command: str | None) -> dict[str, Any]:
    from pncd.export import manifest as mf
    from pncd.io import atomic_dir, write_json

    log = log or _stderr
    validate(opts, protect=(Path(run).parent if Path(run).is_file() else Path(run),))
    require_runtime(opts.target, opts.precision)
    src = _load_source(run, opts)
    shared = take_shared_onnx(opts.onnx, src, opts.dynamic_batch) if opts.onnx and src.qdq_onnx is None else None
    held, calib, validation = _load_images(opts, src, log)
    ref = parity.torch_logits(src.model, held.images)
    size = src.size

    from pncd.rundir import scratch_dir, writing

    with atomic_dir(opts.out, force=opts.force, protect=(src.run_dir,), kind="export") as tmp, \
            scratch_dir("export") as scratch, writing(Path(opts.out), tmp, scratch):
        fp32_onnx = Path(scratch) / "model.onnx"
        if src.qdq_onnx is not None:
            shutil.copyfile(src.qdq_onnx, fp32_onnx)
            exporter = {"onnx": f"{src.qdq_onnx.name} written by pncd qat", "rewrites": rewrite_file(fp32_onnx)}
        elif shared is not None:
            log(f"building from {opts.onnx} (exported once from this checkpoint)")
            exporter = shared.copy_to(fp32_onnx)
        else:
            log(f"exporting {src.cfg['model'].get('name')} to ONNX ({size[0]}x{size[1]}, "
                f"{'dynamic' if opts.dynamic_batch else 'static'} batch)")
            exporter = export_onnx(src.model, fp32_onnx, src.channels, size[0], size[1], opts.dynamic_batch)
        what = f"building the {opts.target} {opts.precision} artifact"
        log(what)
        with heartbeat(what):
            built = build_target(opts, fp32_onnx, tmp, calib, validation, src.num_classes,
                                 input_chw=(src.channels, size[0], size[1]), log=log, prequantized=src.qdq_onnx is not None)
        if opts.precision == "int8":
            qat = src.cfg["qat"] if src.qdq_onnx is not None else None
            built.build["quantization"] = {"route": "qat", **qat} if qat is not None else {"route": "ptq"}
            built.build["quantization"].update(cpu_int8_record(opts.target, built.build, qat))
        with heartbeat("checking the artifact against torch"):
            results = _check_parity(built, opts, ref, held, src.num_classes, log)
        man = _manifest(tmp, run, src, opts, built, calib, exporter, results, options, command)
        write_json(tmp / mf.MANIFEST, man)
    first = man["parity"]
    kept = "n/a" if first["dice_ratio"] is None else f"{first['dice_ratio']:.2%}"
    log(f"wrote {opts.out}: {man['artifact']} ({opts.target} {opts.precision}, {mf.checked_on(man)}; agreement with "
        f"torch: {first['argmax_agreement']:.4%} of pixels, max |logit diff| {first['max_abs_logit_diff']:.3g}, "
        f"Dice of the masks {_fmt(first['dice_vs_torch'])}; Dice kept {kept} of torch's Dice vs labels)")
    return man


def _manifest(tmp: Path, run: str | Path, src: _Source, opts: ExportOptions, built: BuildResult,
              calib: ImageSet | None, exporter: dict[str, Any], results: dict[str, dict[str, Any]],
              options: dict[str, Any] | None, command: str | None) -> dict[str, Any]:
    from pncd.export import manifest as mf

    first = next(iter(results.values()))
    batch_dim: Any = "batch" if opts.dynamic_batch else 1
    h, w = src.size
    source = mf.source_record(run, src.checkpoint, src.cfg, src.checkpoint_sha256, src.config_sha256)
    calibration = (cal.calibration_record(calib, opts.calib_method, built.calibration_method)
                   if calib is not None else None)
    return mf.build_manifest(
        tmp,
        target=opts.target,
        precision=opts.precision,
        runtime=check_pair(opts.target, opts.precision).runtime,
        artifact=built.artifact,
        onnx=built.onnx,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        input={"name": INPUT_NAME, "shape": [batch_dim, src.channels, h, w], "dtype": "float32", "layout": "NCHW"},
        output={"name": OUTPUT_NAME, "shape": [batch_dim, src.num_classes, h, w], "dtype": "float32"},
        source_run=source["run"],
        source=source,
        model=mf.model_record(src.model, src.cfg),
        data=src.data,
        calibration=calibration,
        exporter=exporter,
        build=built.build,
        inference_precision={"requested": opts.inference_precision,
                             "hint": (built.build or {}).get("parity_config", {}).get("INFERENCE_PRECISION_HINT"),
                             "used": first["inference_precision"],
                             "cpu": cpu_summary()},
        tensorrt=built.tensorrt,
        parity=first,
        parity_all=results if len(results) > 1 else None,
        checks={"rule": first["check"]["rule"], "passed": all(r["check"]["passed"] for r in results.values()),
                "warnings": [w for r in results.values() for w in r["check"]["warnings"]], "strict": opts.strict},
        options=options or {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
        command=command,
    )


def _stderr(msg: str) -> None:
    warn(msg)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def build_spec(opts: ExportOptions, calib: ImageSet | None, validation: ImageSet, num_classes: int,
               input_chw: tuple[int, int, int] | None, log: Callable[[str], None], prequantized: bool) -> BuildSpec:
    """The target's build spec from the export's options (every default resolved here)."""
    from pncd.targets.openvino_build import default_rounding

    portable = int8_portable(opts)
    return BuildSpec(precision=opts.precision, calib=calib, validation=validation, num_classes=num_classes,
                     input_chw=input_chw, input_name=INPUT_NAME, dynamic_batch=opts.dynamic_batch,
                     prequantized=prequantized, calib_method=opts.calib_method, keep_float=ends_of(opts.keep_float),
                     portable=portable, accuracy_control=opts.accuracy_control, max_dice_drop=opts.max_dice_drop,
                     ov_preset=opts.ov_preset or "mixed",
                     ov_rounding=opts.ov_rounding or default_rounding(portable, opts.accuracy_control),
                     inference_precision=opts.inference_precision, log=log)


def build_target(opts: ExportOptions, fp32_onnx: Path, out_dir: Path, calib: ImageSet | None,
                 validation: ImageSet, num_classes: int, input_chw: tuple[int, int, int] | None = None,
                 log: Callable[[str], None] | None = None, prequantized: bool = False) -> BuildResult:
    """Decide INT8's float-layer plan (:func:`pncd.export.sensitivity.float_plan`), then write the
    target's files into ``out_dir`` (``TARGETS[opts.target].build``); return what the manifest
    and parity need. ``validation``: the held-out images the plan and OpenVINO's accuracy control
    compute Dice on."""
    target = check_pair(opts.target, opts.precision)
    spec = build_spec(opts, calib, validation, num_classes, input_chw, log or _stderr, prequantized)
    spec.float_nodes, spec.plan_record = float_plan(target.plan_backend, fp32_onnx, spec, opts.keep_float, opts.sensitivity)
    built = target.build(fp32_onnx, out_dir, spec)
    if "keep_float_auto" in spec.plan_record and target.plan_backend == "openvino" and spec.ov_rounding != "nearest":
        # the export rounded the chosen candidate again after the search scored NNCF's rounding
        label, runner = built.parity_runners[0]
        with runner as r:
            check_artifact(built.build, lambda x: next(iter(r.infer({spec.input_name: x}).values())),  # one output
                           validation, num_classes, spec.ov_rounding, spec.log)
    if not prequantized:  # INT8 against FP32 on this CPU, FP16 on a CPU (pncd.export.speed_check)
        from pncd.export.speed_check import speed_notes

        speed_notes(target, opts.precision, fp32_onnx, out_dir, built.build, built.artifact, spec.input_name, input_chw,
                    (built.build.get("parity_config") or {}).get("INFERENCE_PRECISION_HINT"), spec.log)
    return built
