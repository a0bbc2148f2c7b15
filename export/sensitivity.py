"""INT8 sensitivity per block and ``--keep-float auto``.

A *block* is a group of the quantizable nodes (Conv, ConvTranspose, MatMul, Gemm) by the torch
module that made them: the dynamo exporter records each ONNX node's module path in the
metadata ``pkg.torch.onnx.name_scopes`` (``['', 'stage1', 'stage1.0', ..., op]``). Nodes are
grouped by their first-level module (``initial``, ``down1``, ``head``, ...); while there are
fewer than :data:`MIN_BLOCKS` blocks, the largest one that has sub-modules is split into them
(MobileNetV2's ``backbone`` into ``backbone.0`` ... ``backbone.18``). For ONNX Runtime's CPU
flavour, which quantizes additions too, a block also holds the ``Add`` nodes of its modules, so a
block kept in float keeps its residual sums in float with it.

Sensitivity: for each block, the model with only that block quantized (everything else in
floating point) is calibrated, run on the validation images on the target's own runtime
(ONNX Runtime QDQ for onnxruntime and tensorrt, NNCF + OpenVINO for openvino) and scored
with :mod:`pncd.scoring`; its drop is the float model's Dice (same runtime, same images)
minus that Dice. ``--keep-float auto`` then starts from the default artifact (the network ends
``--keep-float`` names, ``first`` for plain ``auto``, in float, everything else INT8) and keeps
in floating point the most sensitive blocks, one more at a time (greedy), until the Dice drop is
within ``--max-dice-drop`` (starting from nothing in float, a choice made on the LGG val split
lost 1.7 points of test Dice retention against the default on MobileNetV2); at most :data:`AUTO_MAX_FRACTION` of the blocks are kept (beyond that INT8
has little left to gain), and if no candidate reaches the bound the best one is kept and the
manifest says so.

OpenVINO: ``ov.convert_model(onnx)`` keeps the ONNX node names as friendly names, with two
twists (:func:`openvino_names`): a Conv with a bias becomes a Convolution ``NAME/WithoutBiases``
plus an Add ``NAME``, and the op producing the graph output takes the output's name
(``logits``). A block's ops are passed to NNCF's ``IgnoredScope(names=...)`` under those names;
an ONNX node OpenVINO has under neither is listed under ``unmapped_nodes`` (the search scores
what NNCF really did, so nothing is assumed about it).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pncd.errors import PncdError
from pncd.data.images import ImageSet
from pncd.targets.base import BuildSpec
from pncd.targets.openvino_core import compile_model

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
MIN_BLOCKS = 8
AUTO_MAX_FRACTION = 0.5
TOP = "(top)"

InferFn = Callable[[np.ndarray], np.ndarray]


def node_modules(node) -> list[str]:
    """The module paths of an ONNX node, outermost first (no root, no op name)."""
    import ast

    for e in node.metadata_props:
        if e.key == NAME_SCOPES:
            try:
                scopes = list(ast.literal_eval(e.value))
            except (ValueError, SyntaxError):
                return []
            return [s for s in scopes[:-1] if s]
    return []


def blocks_of(modules: dict[str, list[str]]) -> dict[str, list[str]]:
    """{block: node names} from {node name: module paths}, in graph order (see module docstring)."""
    level = {n: 1 for n in modules}

    def key(n: str) -> str:
        mods = modules[n]
        return mods[min(level[n], len(mods)) - 1] if mods else TOP

    while True:
        groups: dict[str, list[str]] = {}
        for n in modules:
            groups.setdefault(key(n), []).append(n)
        if len(groups) >= MIN_BLOCKS:
            return groups
        splittable = [(len(ns), b) for b, ns in groups.items()
                      if len({modules[n][level[n]] if len(modules[n]) > level[n] else b for n in ns}) > 1]
        if not splittable:
            return groups
        _, big = max(splittable)
        for n in groups[big]:
            level[n] += 1


def onnx_blocks(path: str | Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """({block: quantizable ONNX node names}, {block: every ONNX node name of its modules}) of ``path``.

    Blocks are made from the quantizable nodes; the other nodes of a block's modules (Add,
    Concat, Resize, ...) are listed with it for OpenVINO, where NNCF quantizes more than those."""
    import onnx

    from pncd.targets.onnxrt_build import QUANTIZED_OPS

    m = onnx.load(str(path), load_external_data=False)
    mods = {n.name: node_modules(n) for n in m.graph.node}
    blocks = blocks_of({n.name: mods[n.name] for n in m.graph.node if n.op_type in QUANTIZED_OPS})
    members: dict[str, list[str]] = {b: [] for b in blocks}
    for n in m.graph.node:
        home = next((mod for mod in reversed(mods[n.name]) if mod in members), None)
        if home is None and not mods[n.name] and TOP in members:
            home = TOP
        if home is not None:
            members[home].append(n.name)
    return blocks, members


def dice_of(fn: InferFn, images: ImageSet, num_classes: int) -> float:
    """Dice per case of ``fn`` on ``images`` (:func:`pncd.scoring.predict` and ``score``)."""
    from pncd.scoring import predict, score

    preds = predict(fn, images.images, batch=1)
    d = score(preds, images.masks, images.case_ids, num_classes).summary()["dice"]
    return float(d) if d is not None else 0.0


class OrtBackend:
    """Candidates as ONNX Runtime QDQ files (asymmetric, or symmetric for TensorRT)."""

    def __init__(self, fp32_onnx: Path, calib: ImageSet, input_name: str, method: str, symmetric: bool,
                 scratch: Path, ends: tuple[str, ...] = (), reduce_range: bool = False) -> None:
        from pncd.targets.onnxrt_build import float_layers, pre_process

        self.runtime = "onnxruntime" + (" (TensorRT's symmetric QDQ)" if symmetric else "")
        self.calib, self.input_name, self.method, self.symmetric = calib, input_name, method, symmetric
        self.reduce_range = reduce_range  # the 7-bit weights the export will write (--int8-cpu any)
        self.scratch = scratch
        self.pre = scratch / "preprocessed.onnx"
        pre_process(fp32_onnx, self.pre)
        self.blocks, members = onnx_blocks(self.pre)
        self.counts = {b: len(ns) for b, ns in self.blocks.items()}  # its quantizable (weight) nodes
        if not symmetric:  # the CPU flavour quantizes additions too: each block's stay with it
            import onnx

            from pncd.targets.onnxrt_build import CPU_QUANTIZED_OPS, QUANTIZED_OPS

            kind = {n.name: n.op_type for n in onnx.load(str(self.pre), load_external_data=False).graph.node}
            more = set(CPU_QUANTIZED_OPS) - set(QUANTIZED_OPS)
            self.blocks = {b: ns + [n for n in members[b] if kind.get(n) in more] for b, ns in self.blocks.items()}
        self.unmapped: list[str] = []
        self.all_nodes = [n for ns in self.blocks.values() for n in ns]
        self.ends = float_layers(self.pre, ends)  # --keep-float's network ends, float in every auto candidate
        self._count = 0

    def _run(self, path: Path) -> InferFn:
        from pncd.targets.onnxrt import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(path, int32_sums=self.symmetric).activate()  # TensorRT's int32 sums
        return lambda x: runner.infer({self.input_name: x})["logits"]

    def float_fn(self) -> InferFn:
        return self._run(self.pre)

    def quantized_fn(self, float_nodes: list[str]) -> InferFn:
        from pncd.targets.onnxrt_build import quantize_preprocessed

        self._count += 1
        dst = self.scratch / f"candidate-{self._count}.onnx"
        quantize_preprocessed(self.pre, dst, self.calib.images, self.input_name, self.method, self.symmetric,
                              float_nodes, cache=self.scratch / "calibration.json", reduce_range=self.reduce_range)
        return self._run(dst)

    def alone_fn(self, block: str) -> InferFn:
        """Only ``block`` quantized (the other quantizable nodes excluded)."""
        return self.quantized_fn([n for n in self.all_nodes if n not in set(self.blocks[block])])


def openvino_names(onnx_path: str | Path, present: set[str]) -> dict[str, list[str]]:
    """{ONNX node name: OpenVINO friendly names} where OpenVINO has the op. ``convert_model`` splits a
    Conv with a bias into a Convolution ``NAME/WithoutBiases`` and an Add ``NAME`` (the name NNCF's
    ignored scope must see is the Convolution's); an op producing the graph output is named after
    its tensor (``logits``) instead of ``NAME``."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    out: dict[str, list[str]] = {}
    for n in m.graph.node:
        base = n.name if n.name in present else (n.output[0] if n.output and n.output[0] in present else None)
        if base is not None:
            out[n.name] = [x for x in (base, f"{base}/WithoutBiases") if x in present]
    return out


class OpenVinoBackend:
    """Candidates quantized by NNCF on the OpenVINO model, compiled for the CPU."""

    def __init__(self, fp32_onnx: Path, calib: ImageSet, input_name: str, method: str, preset: str,
                 hint: str, ends: tuple[str, ...] = (), portable: bool = True) -> None:
        import openvino as ov

        from pncd.targets.openvino_build import float_layers

        self.runtime = "openvino"
        self.calib, self.input_name, self.method, self.preset = calib, input_name, method, preset
        self.portable = portable  # NNCF's overflow fix, as the export will apply it (--int8-cpu any)
        self.hint = hint  # the precision the target's runner computes in (INFERENCE_PRECISION_HINT)
        self.core = ov.Core()
        self.model = ov.convert_model(str(fp32_onnx))
        self.names = [op.get_friendly_name() for op in self.model.get_ops()]
        self.ends = float_layers(self.model, ends)
        ov_name = openvino_names(fp32_onnx, set(self.names))
        onnx_side, members = onnx_blocks(fp32_onnx)
        self.unmapped = [n for ns in onnx_side.values() for n in ns if n not in ov_name]
        # a block = its modules' ops OpenVINO has by name; counted by its quantizable ones
        self.blocks = {b: [x for n in members[b] for x in ov_name.get(n, [])] for b, ns in onnx_side.items()
                       if any(n in ov_name for n in ns)}
        self.counts = {b: sum(n in ov_name for n in onnx_side[b]) for b in self.blocks}

    def _compile(self, model) -> InferFn:
        compiled = compile_model(model, "CPU", precision_hint=self.hint, core=self.core)
        out = compiled.output(0)
        return lambda x: compiled(x)[out]

    def float_fn(self) -> InferFn:
        return self._compile(self.model)

    def quantized_fn(self, float_nodes: list[str]) -> InferFn:
        from pncd.targets.openvino_build import quantize

        # NNCF's own rounding (quantize's default): the search ranks blocks by it, one quantization per
        # candidate; the export's re-rounding (--ov-rounding gptq) runs once, on the final model
        q, _ = quantize(self.model.clone(), self.input_name, self.calib, self.method, False, None, 0.01, 2,
                         keep_float=(), preset=self.preset, float_nodes=float_nodes, portable=self.portable)
        return self._compile(q)

    def alone_fn(self, block: str) -> InferFn:
        """Only ``block`` quantized: every other op of the model in NNCF's ignored scope."""
        mine = set(self.blocks[block])
        return self.quantized_fn([n for n in self.names if n not in mine])


def sensitivity(backend, validation: ImageSet, num_classes: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The sensitivity record: the float Dice and one row per block, most sensitive first."""
    t0 = time.perf_counter()
    blocks = backend.blocks
    if not blocks:
        raise PncdError("--sensitivity: the network has no quantizable nodes (Conv, ConvTranspose, MatMul, Gemm)")
    float_dice = dice_of(backend.float_fn(), validation, num_classes)
    log(f"sensitivity: float Dice {float_dice:.4f} on {len(validation)} {validation.split} images; "
        f"quantizing each of {len(blocks)} blocks alone on {backend.runtime}")
    rows = []
    counts = getattr(backend, "counts", {})
    for name, nodes in blocks.items():
        d = dice_of(backend.alone_fn(name), validation, num_classes)
        log(f"sensitivity: {name} alone in INT8 -> Dice {d:.4f} (drop {float_dice - d:+.4f})")
        rows.append({"block": name, "nodes": counts.get(name, len(nodes)), "node_names": list(nodes), "dice": d,
                     "drop": float_dice - d})
    rows.sort(key=lambda r: -r["drop"])  # stable: ties stay in graph order
    return {"runtime": backend.runtime, "metric": "Dice per case (pncd.scoring), foreground classes",
            "validation_split": validation.split, "validation_images": len(validation),
            "float_dice": float_dice, "grouping": f"{NAME_SCOPES}, first-level modules (split to >= {MIN_BLOCKS})",
            "blocks": rows, "unmapped_nodes": list(backend.unmapped),
            "seconds": round(time.perf_counter() - t0, 1)}


def keep_float_auto(backend, table: dict[str, Any], validation: ImageSet, num_classes: int, max_drop: float,
                    log: Callable[[str], None]) -> dict[str, Any]:
    """Greedy: keep the most sensitive blocks in float, one more at a time, until the drop is within
    ``max_drop`` (absolute Dice). Returns the record; ``float_nodes`` are the nodes to keep."""
    t0 = time.perf_counter()
    rows = table["blocks"]
    cap = max(1, math.floor(len(rows) * AUTO_MAX_FRACTION))
    tried: list[dict[str, Any]] = []
    for k in range(0, cap + 1):
        kept = rows[:k]
        nodes = list(dict.fromkeys([*backend.ends, *(n for r in kept for n in r["node_names"])]))
        d = dice_of(backend.quantized_fn(nodes), validation, num_classes)
        tried.append({"kept_blocks": [r["block"] for r in kept], "dice": d, "drop": table["float_dice"] - d})
        log(f"keep-float auto: {k} block(s) in float -> Dice {d:.4f} (drop {table['float_dice'] - d:+.4f})")
        if table["float_dice"] - d <= max_drop:
            break
    best = next((t for t in tried if t["drop"] <= max_drop), None)
    reached = best is not None
    if best is None:
        best = max(tried, key=lambda t: (t["dice"], -len(t["kept_blocks"])))
        log(f"warning: --keep-float auto: no candidate with up to {cap} of {len(rows)} blocks in float is within "
            f"--max-dice-drop {max_drop} (best: drop {best['drop']:.4f} keeping {len(best['kept_blocks'])}); kept that")
    by_name = {r["block"]: r for r in rows}
    return {"max_dice_drop": max_drop, "drop_type": "absolute", "reached": reached,
            "kept_blocks": best["kept_blocks"],
            "float_nodes": [n for b in best["kept_blocks"] for n in by_name[b]["node_names"]],
            "ends_in_float": list(backend.ends),
            "float_dice": table["float_dice"], "dice": best["dice"], "drop": best["drop"],
            "max_blocks": cap, "tried": tried, "seconds": round(time.perf_counter() - t0, 1)}


def check_artifact(record: dict[str, Any], fn: InferFn, validation: ImageSet | None, num_classes: int,
                   rounding: str, log: Callable[[str], None]) -> None:
    """The export rounded the chosen candidate again (OpenVINO's ``--ov-rounding gptq``), after the
    search had scored NNCF's rounding: score the artifact itself on the same images and record it
    under ``keep_float_auto.artifact`` (a warning where it is no longer within the bound)."""
    chosen = record.get("keep_float_auto")
    if chosen is None or validation is None:
        return
    d = dice_of(fn, validation, num_classes)
    drop = chosen["float_dice"] - d
    within = drop <= chosen["max_dice_drop"]
    chosen["artifact"] = {"rounding": rounding, "dice": d, "drop": drop, "within": within}
    log(f"keep-float auto: the artifact, rounded again ({rounding}): Dice {d:.4f} (drop {drop:+.4f}; the search "
        f"scored {chosen['dice']:.4f} with NNCF's rounding)")
    if not within:
        log(f"warning: --keep-float auto: the re-rounded artifact is NOT within --max-dice-drop "
            f"{chosen['max_dice_drop']} (drop {drop:.4f}); try --ov-rounding nearest")


def table_lines(table: dict[str, Any], top: int = 12) -> list[str]:
    """A short text table of the most sensitive blocks."""
    lines = [f"{'block':<28} {'nodes':>5} {'Dice alone-INT8':>15} {'drop':>8}"]
    for r in table["blocks"][:top]:
        lines.append(f"{r['block'][:28]:<28} {r['nodes']:>5} {r['dice']:>15.4f} {r['drop']:>+8.4f}")
    if len(table["blocks"]) > top:
        lines.append(f"... {len(table['blocks']) - top} more blocks in the manifest (build.sensitivity)")
    return lines


def plan(backend, validation: ImageSet | None, num_classes: int, max_drop: float, auto: bool,
         log: Callable[[str], None]) -> tuple[list[str] | None, dict[str, Any]]:
    """Run the sensitivity (and, ``auto``, the greedy search). Returns (float nodes for the artifact,
    or None to keep ``--keep-float`` as given; the manifest's build entries)."""
    if validation is None or len(validation) == 0:
        raise PncdError("--sensitivity needs held-out images with labels (a val or test split)")
    table = sensitivity(backend, validation, num_classes, log)
    for line in table_lines(table):
        log(f"  {line}")
    record: dict[str, Any] = {"sensitivity": table}
    if not auto:
        return None, record
    chosen = keep_float_auto(backend, table, validation, num_classes, max_drop, log)
    record["keep_float_auto"] = chosen
    log(f"keep-float auto: kept {chosen['kept_blocks'] or 'no block'} in float; Dice {chosen['dice']:.4f} "
        f"vs float {chosen['float_dice']:.4f} ({'within' if chosen['reached'] else 'NOT within'} "
        f"--max-dice-drop {max_drop})")
    return chosen["float_nodes"], record


def ends_of(keep_float: tuple[str, ...]) -> tuple[str, ...]:
    """The network ends ``--keep-float`` leaves in float: as given, and for ``auto`` alone the
    default's (first): auto adds blocks to what the default keeps, never fewer."""
    ends = tuple(k for k in keep_float if k != "auto")
    return ends or (("first",) if "auto" in keep_float else ())


def float_plan(backend_kind: str | None, fp32_onnx: Path, spec: BuildSpec, keep_float: tuple[str, ...],
               run_sensitivity: bool) -> tuple[list[str] | None, dict[str, Any]]:
    """The INT8 float-layer plan of a build, measured on the target's own backend
    (``backend_kind``: :attr:`pncd.targets.base.Target.plan_backend`): (float nodes for the
    artifact, or None to keep ``spec.keep_float`` as it is; the manifest's build entries).
    Nothing is measured unless ``--sensitivity`` or ``--keep-float auto`` asks for it."""
    auto = "auto" in tuple(keep_float)
    if not (run_sensitivity or auto) or spec.precision != "int8":
        return None, {}
    if spec.prequantized or spec.calib is None:
        raise PncdError("--sensitivity / --keep-float auto apply to calibrated INT8, not to a QAT run's INT8")
    if backend_kind is None:
        raise PncdError("--sensitivity / --keep-float auto: this target has no backend to measure INT8 blocks on")
    calib = spec.calib
    with tempfile.TemporaryDirectory(prefix="pncd-sens-") as scratch:
        backend: Any
        if backend_kind == "openvino":
            from pncd.targets.cpu import resolve_inference_precision

            hint = resolve_inference_precision(spec.inference_precision, "int8", "CPU")
            backend = OpenVinoBackend(fp32_onnx, calib, spec.input_name, spec.calib_method, spec.ov_preset, hint,
                                      ends=spec.keep_float, portable=spec.portable)
        else:
            symmetric = backend_kind == "ort-symmetric"
            backend = OrtBackend(fp32_onnx, calib, spec.input_name, spec.calib_method, symmetric, Path(scratch),
                                 ends=spec.keep_float, reduce_range=not symmetric and spec.portable)
        return plan(backend, spec.validation, spec.num_classes, spec.max_dice_drop, auto, spec.log)
