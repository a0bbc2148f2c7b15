"""Quantization-aware distillation (``pncd qat``): fine-tune a trained student with INT8 fake
quantization in the graph, distilled from a frozen float network, and write the quantized
(QDQ) ONNX that ``pncd export --precision int8`` ships to ONNX Runtime, OpenVINO and TensorRT.

Why NNCF (and not ``torch.ao``/PT2E or NVIDIA's Model Optimizer): NNCF is already the
project's OpenVINO quantizer, its torch backend inserts fake quantizers where OpenVINO
quantizes (the same scheme as the PTQ route: per-channel symmetric INT8 weights, per-tensor
asymmetric activations with the ``mixed`` preset), it runs on the CPU, and ``nncf.strip`` turns
its quantizers into torch's own fake-quantize ops, which the ONNX exporter writes as
QuantizeLinear/DequantizeLinear pairs: the explicit-quantization form that ONNX Runtime runs
as INT8, OpenVINO reads as INT8 and TensorRT builds with. PT2E moved out of torch into
``torchao`` and needs a backend-specific quantizer per target; Model Optimizer targets CUDA.

The recipe (the fine-tune of NNCF's and NVIDIA's QAT guides, shortened for a CPU):
1. quantize the student with NNCF (post-training: ranges from ``calib_images`` training images);
2. fine-tune it for ``steps`` steps at a small learning rate with BatchNorm statistics frozen,
   on ``Loss_seg`` + the weighted distillation losses (``pmd`` by default: the float student
   itself, or ``--teacher RUN``, as the teacher); score the validation split every
   ``eval_every`` steps and keep the best (step 0 = the post-training quantization);
3. strip the quantizers to torch's fake-quantize ops and export the QDQ ONNX.

Only logit losses (those registered with ``uses_features=False``) can be used here.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from pncd.errors import PncdError, RunFailed
from pncd.optspec import check_ranges
from pncd.qat_options import QatOptions

if TYPE_CHECKING:
    from pncd.distill.base import DistillLoss

QDQ_ONNX = "model_qdq.onnx"
# NNCF's torch names of the operations pncd export also keeps in float (FLOAT_OPS of
# pncd.targets.openvino_build): comparisons, selections, max and max-pooling
FLOAT_OPS = ("maximum", "minimum", "__eq__", "__ne__", "__gt__", "__ge__", "__lt__", "__le__", "where",
             "max_pool2d", "__and__", "__or__", "__invert__")
# NNCF compiles its CPU fake-quantize kernels on first use and gives up after 60 s by default,
# which a loaded 2-core machine can exceed: wait for the compiler instead (once per machine).
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")


@dataclass
class QatResult:
    out: Path
    float_val_dice: float
    ptq_val_dice: float
    qat_val_dice: float
    best_step: int


def _dice(model: nn.Module, sliceset: Any) -> float:
    """Per-case mean Dice of ``model`` on a split, as training validates."""
    from pncd.evaluation.run import evaluate_model

    return float(evaluate_model(model, sliceset, progress=False).summary()["dice"])


def _teacher(run: Path, student: nn.Module, cfg: dict[str, Any], teacher: str) -> nn.Module:
    from pncd.checkpoint import load_model

    if teacher == "self":
        model = copy.deepcopy(student)
    else:
        model, tcfg = load_model(teacher)
        if tcfg["model"]["num_classes"] != cfg["model"]["num_classes"]:
            raise PncdError(f"--teacher {teacher} predicts {tcfg['model']['num_classes']} classes, the student "
                            f"{run} {cfg['model']['num_classes']}; pass a teacher of the same task or 'self'")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _losses(opts: QatOptions, num_classes: int) -> list[tuple[str, float, DistillLoss]]:
    """The weighted logit losses, built by the distillation registry as ``pncd distill`` builds them."""
    from pncd.distill.base import LossContext, get_loss
    from pncd.distill.options import DistillOptions

    ctx = LossContext(options=DistillOptions(weights=dict(opts.weights), temperature=opts.temperature),
                      num_classes=num_classes, s_channels=[], t_channels=[], n_region_samples=0)
    out = []
    for name, weight in opts.weights.items():
        cls = get_loss(name)
        if cls.uses_features:
            raise PncdError(f"--weight {name}: {name} distils tapped features, which pncd qat does not tap; "
                            "use a logit loss (e.g. pmd)")
        out.append((name, float(weight), cls.from_context(ctx)))
    return out


def first_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """NNCF's names of the operations that read the network's input (NNCF's traced graph)."""
    from nncf.torch.model_creation import wrap_model

    graph = wrap_model(copy.deepcopy(model).eval(), example_input=example, trace_parameters=True).get_graph()
    return [n.node_name for inp in graph.get_input_nodes() for n in graph.get_next_nodes(inp)]


def quantize(model: nn.Module, calib: list[torch.Tensor], keep_float: str = "first", portable: bool = True) -> nn.Module:
    """NNCF post-training quantization of a copy of ``model`` (the QAT starting point).

    ``keep_float="first"`` leaves the layers that read the image in float, as ``pncd export``'s
    INT8 does by default: a lesion is often the brightest outlier of a normalised scan, which a
    calibrated input range clips, and ONNX Runtime's u8 x s8 kernels can saturate on CPUs without
    VNNI (see ``pncd.targets.onnxrt_build.float_layers``). ``portable``: NNCF's overflow fix on every
    layer, 7-bit weights, so the QDQ ONNX computes the same on CPUs without VNNI (as the export's
    PTQ, see ``pncd.targets.openvino_build``)."""
    import logging

    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    nncf.set_log_level(logging.ERROR)
    # comparisons and selections stay in float, as in the export's INT8 (FLOAT_OPS there): ENet's
    # max-unpooling compares each corner with the window's maximum, which quantizing breaks
    names = first_layers(model, calib[0]) if keep_float == "first" else []
    ignored = nncf.IgnoredScope(names=names, types=list(FLOAT_OPS), validate=False)
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE if portable else OverflowFix.DISABLE)
    return nncf.quantize(copy.deepcopy(model).eval(), nncf.Dataset(calib), subset_size=len(calib),
                         preset=nncf.QuantizationPreset.MIXED, ignored_scope=ignored, advanced_parameters=advanced)


def _freeze_bn(model: nn.Module) -> None:
    """Training mode for the weights, frozen BatchNorm statistics (a short fine-tune must not
    re-estimate them from a few hundred small batches)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _loader(train: Any, opts: QatOptions) -> torch.utils.data.DataLoader:
    from pncd.data import SegDataset, lesion_sampler_weights

    ds = SegDataset(train, augment=True, seed=opts.seed)
    n = opts.steps * opts.batch
    gen = torch.Generator().manual_seed(opts.seed)
    if opts.lesion_fraction:
        sampler: torch.utils.data.Sampler = torch.utils.data.WeightedRandomSampler(
            lesion_sampler_weights(train, opts.lesion_fraction).tolist(), n, generator=gen)
    else:
        sampler = torch.utils.data.RandomSampler(ds, num_samples=n, generator=gen)
    return torch.utils.data.DataLoader(ds, batch_size=opts.batch, sampler=sampler, drop_last=True)


def fine_tune(q: nn.Module, teacher: nn.Module, train: Any, val: Any, num_classes: int, opts: QatOptions,
              losses: list[tuple[str, float, DistillLoss]],
              log: Callable[[dict[str, Any]], None]) -> tuple[dict[str, torch.Tensor], float, int]:
    """The QAT loop; returns the best state (by validation Dice), its Dice and its step."""
    from pncd.console import progress

    from pncd.distill.base import DistillBatch
    from pncd.losses import SegLoss

    seg = SegLoss(num_classes)
    best = (copy.deepcopy(q.state_dict()), _dice(q, val), 0)
    log({"step": 0, "val_dice": best[1]})
    opt = torch.optim.Adam([p for p in q.parameters() if p.requires_grad], lr=opts.lr)
    _freeze_bn(q)
    t0 = time.perf_counter()
    for step, (x, y) in enumerate(progress(_loader(train, opts), desc="qat", unit="step"), 1):
        out = q(x)
        with torch.no_grad():
            t_out = teacher(x)
        batch = DistillBatch(images=x, masks=y, student_logits=out, teacher_logits=t_out, student_feats=[],
                             teacher_feats=[])
        terms = {name: w * fn.batch_loss(batch) for name, w, fn in losses}
        loss = seg(out, y)["loss"] + sum(terms.values())
        if not torch.isfinite(loss):
            raise RunFailed(f"qat step {step}: the loss is {loss.item()}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % opts.eval_every == 0 or step == opts.steps:
            dice = _dice(q, val)
            log({"step": step, "loss": loss.item(), **{k: v.item() for k, v in terms.items()},
                 "val_dice": dice, "seconds": round(time.perf_counter() - t0, 1)})
            if dice > best[1]:
                best = (copy.deepcopy(q.state_dict()), dice, step)
            _freeze_bn(q)
    return best


def export_qdq(q: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Strip NNCF's quantizers to torch fake-quantize ops and write the QDQ ONNX (batch dynamic)."""
    import warnings

    import nncf

    from pncd.targets.onnx_export import INPUT_NAME, OUTPUT_NAME
    from pncd.io import atomic_path

    stripped = nncf.strip(q.eval(), do_copy=True, example_input=example)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the TorchScript exporter: it writes fake_quantize as QuantizeLinear/DequantizeLinear
        torch.onnx.export(stripped, (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=17, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def float_weights(q: nn.Module, model_cfg: dict[str, Any]) -> nn.Module:
    """The fine-tuned weights in a plain network of the run's architecture (no quantizers)."""
    from pncd.checkpoint import build_model

    plain = build_model(model_cfg)
    own = plain.state_dict()
    plain.load_state_dict({k: v for k, v in q.state_dict().items() if k in own}, strict=True)
    return plain


def run_qat(run: str | Path, out: str | Path, opts: QatOptions, data: str | None = None, force: bool = False,
            echo: Callable[[str], None] = print) -> QatResult:
    """``pncd qat``: see the module docstring. Writes ``out`` atomically, holding its lock
    (:mod:`pncd.outlock`: a second process on the same ``out`` is refused) from the start."""
    from pncd.outlock import out_lock

    check_ranges(opts)  # every setting within its range (runs built in Python; the command line checks them too)
    with out_lock(out, "pncd qat"):
        return _run_qat(Path(run), out, opts, data, force, echo)


def _run_qat(run: Path, out: str | Path, opts: QatOptions, data: str | None, force: bool,
             echo: Callable[[str], None]) -> QatResult:
    from pncd.checkpoint import load_model, model_spec, save_weights
    from pncd.data import load_split
    from pncd.data.spec import DataSpec
    from pncd.io import atomic_dir, check_output, write_json
    from pncd.targets.base import require

    for module in ("nncf", "torchao"):
        require(module, "pncd[qat]", "pncd qat")
    student, cfg = load_model(run)
    losses = _losses(opts, int(cfg["model"]["num_classes"]))  # a bad --weight fails before any work
    d = {**cfg["data"], **({"root": str(Path(data).resolve())} if data else {})}
    spec = DataSpec.from_dict(d)
    check_output(out, force, protect=(run, spec.root), names=("config.json", "best.safetensors", "log.json", QDQ_ONNX), kind="qat")
    train, val = load_split(spec, "train"), load_split(spec, "val")
    k = spec.num_classes
    teacher = _teacher(run, student, cfg, opts.teacher)
    torch.manual_seed(opts.seed)
    idx = np.unique(np.linspace(0, len(train) - 1, min(opts.calib_images, len(train))).astype(int))
    calib = [torch.as_tensor(np.asarray(train.images[i : i + 1])) for i in idx]
    float_dice = _dice(student, val)
    echo(f"float student {run}: val Dice {float_dice:.4f}; quantizing with NNCF on {len(calib)} training images "
         "(the first run on a machine compiles NNCF's CPU kernels: a minute or two)")
    q = quantize(student, calib, opts.keep_float, portable=opts.int8_cpu != "vnni")
    rows: list[dict[str, Any]] = []

    def log(row: dict[str, Any]) -> None:
        rows.append(row)
        echo("  " + ", ".join(f"{a} {b:.4f}" if isinstance(b, float) else f"{a} {b}" for a, b in row.items()))

    state, best_dice, best_step = fine_tune(q, teacher, train, val, k, opts, losses, log)
    q.load_state_dict(state)
    with atomic_dir(out, force=force, protect=(run, spec.root), kind="qat") as tmp:
        export_qdq(q, calib[0], tmp / QDQ_ONNX)
        plain = float_weights(q, cfg["model"])
        save_weights(plain, tmp / "best.safetensors")
        qat = {"parent": str(run.resolve()), "options": asdict(opts), "float_val_dice": float_dice,
               "ptq_val_dice": rows[0]["val_dice"], "qat_val_dice": best_dice, "best_step": best_step,
               "qdq_onnx": QDQ_ONNX, "library": "nncf", "weight_bits": 8 if opts.int8_cpu == "vnni" else 7}
        write_json(tmp / "config.json", {**cfg, "kind": "qat", "model": model_spec(plain), "data": d, "qat": qat})
        write_json(tmp / "log.json", rows)
    return QatResult(Path(out), float_dice, rows[0]["val_dice"], best_dice, best_step)
