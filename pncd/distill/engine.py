"""``pncd distill``: train a student on ``Loss_seg + a*PMD + b1*RMD + b2*RD + b3*PNSCD``.

The teacher is frozen (eval mode, ``torch.inference_mode``, no gradients) and its forward
pass runs once per batch; its logits and tapped features feed every module. Features are
taken by forward hooks keyed by module path (``pncd.models.FeatureTaps``), so a teacher the
user wrote works too (``--teacher package.module:function --teacher-weights FILE``).

Taps default to each network's declared ``low`` and ``high`` features (EMKD's choice); the
``high`` pair (the last one) feeds PNSCD. The projection heads and the PNSCD memory live only
here: the saved student is a plain ``pncd.models`` checkpoint.

DDP: the PNSCD memory is kept identical on every rank by gathering the teacher embeddings
and their labels from all ranks before each memory update; the heads' gradients are
all-reduced like the student's.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from torch import nn

from pncd import checkpoint as ckpt
from pncd.config import resolved_params
from pncd.errors import PncdError
from pncd.models import FeatureTaps
from pncd.train import Trainer, check_size, options_from_params, prepare_out

from pncd.commands.distill import DEFAULT_WEIGHTS, MODULES  # noqa: E402  (one definition)

HEAD_SEED_OFFSET = 0x5EED_0001  # the distillation heads' RNG stream: torch.manual_seed(offset + run seed)


@dataclass
class DistillOptions:
    """The distillation part of a run's configuration (defaults: REFERENCE.md section 1)."""

    modules: tuple[str, ...] = MODULES
    # the default weights and why they are not the paper's: pncd.commands.distill.DEFAULT_WEIGHTS
    w_pmd: float = DEFAULT_WEIGHTS["pmd"]
    w_rmd: float = DEFAULT_WEIGHTS["rmd"]
    w_rd: float = DEFAULT_WEIGHTS["rd"]
    w_pnscd: float = DEFAULT_WEIGHTS["pnscd"]
    temperature: float = 4.0
    rmd_variant: str = "emkd"  # was "paper" before issue 16
    rd_p: int = 2
    tau: float = 0.07
    n_negatives: int = 4096
    embed_dim: int = 128
    pnscd_norm: str = "crd"  # the crd form's constant Z only
    pnscd_form: str = "infonce"  # "crd": eq. 8's NCE sum, the form before issue 16
    pnscd_memory: int | None = None  # per class; None: 256 (infonce), ceil(N / (K - 1)) (crd)
    kd_warmup: float = 0.1  # fraction of all steps over which the distillation weights ramp 0 -> 1
    taps: list[tuple[str, str]] = field(default_factory=list)

    def weight(self, name: str) -> float:
        return getattr(self, f"w_{name}") if name in self.modules else 0.0

    def active(self) -> list[str]:
        return [m for m in MODULES if self.weight(m) > 0]


def load_teacher(teacher: str, weights: str | None, device: torch.device) -> tuple[nn.Module, dict | None]:
    """A teacher from a pncd run directory, or ``package.module:function`` plus a weights file."""
    path = Path(teacher)
    if path.exists():
        model, cfg = ckpt.load_model(path, "best", device)
        return model, cfg
    if ":" not in teacher:
        raise PncdError(f"--teacher {teacher}: no such run directory, and not a 'package.module:function' factory")
    mod_name, fn_name = teacher.split(":", 1)
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise PncdError(f"--teacher {teacher}: cannot import the factory ({e})") from None
    try:
        model = fn()
    except Exception as e:  # the user's code: say which call failed, in one line
        raise PncdError(f"--teacher {teacher}: calling {fn_name}() failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        "a teacher factory takes no arguments and returns a torch.nn.Module") from None
    if not isinstance(model, nn.Module):
        raise PncdError(f"--teacher {teacher}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    if not weights:
        raise PncdError(f"--teacher {teacher} is a factory: pass its trained weights with --teacher-weights FILE")
    if weights.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(weights)
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise PncdError(f"--teacher-weights {weights} does not fit {teacher}: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), None


def fuse_conv_bn(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d inside an ``nn.Sequential`` into
    the convolution (eval mode only); the BN becomes an Identity, so module paths, and the
    hooks on them, stay valid. Returns the number of pairs folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    n = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and not conv.training:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
                n += 1
    return n


def prepare_teacher(teacher: nn.Module, device: torch.device | str) -> nn.Module:
    """Freeze the teacher for inference: eval mode, no gradients, Conv+BN folded and
    channels_last memory (together about 1.5x faster for DCSAU-Net on a CPU; the outputs
    agree with the unfused network to float rounding)."""
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    fuse_conv_bn(teacher)
    return teacher.to(memory_format=torch.channels_last)


def resolve_taps(student: nn.Module, teacher: nn.Module, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if pairs:
        return pairs
    s_taps, t_taps = getattr(student, "taps", None), getattr(teacher, "taps", None)
    if not s_taps or not t_taps:
        raise PncdError("the teacher declares no taps; name feature pairs with --taps STUDENT_MODULE=TEACHER_MODULE (twice: low, high)")
    return [(s_taps[k].module, t_taps[k].module) for k in ("low", "high")]


class PNCD(nn.Module):
    """The distillation objective: a frozen teacher, feature hooks on both networks, and the
    active loss modules (PMD, RMD, RD, PNSCD with its heads and memory).

    ``forward(student, images, masks, seg_loss, kd_scale)`` runs the teacher once, the student
    once, and returns the dict of every component plus the weighted ``loss``
    (``Loss_seg + kd_scale * sum of w * L``; ``kd_scale`` is the warm-up factor).

    The loss modules (PNSCD's heads: the only random initialisation that exists only in
    distillation) are built inside ``torch.random.fork_rng`` seeded from ``seed``, so building
    them leaves the global RNG untouched: a distilled run and the run of the student alone with
    the same seed share the student's initialisation, augmentation, sampling and dropout. Only ``self.losses`` holds
    trainable parameters (PNSCD's heads); the teacher is not a registered submodule, so the
    state dict of this module is what --resume needs and nothing of it is saved with the student.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, dopts: DistillOptions, num_classes: int, channels: int, size: int,
                 n_region_samples: int, device: torch.device | str = "cpu", seed: int = 0) -> None:
        from pncd.distill.pmd import PMDLoss
        from pncd.distill.pnscd import PNSCDLoss
        from pncd.distill.rd import RDLoss
        from pncd.distill.rmd import RMDLoss
        from pncd.runtime import all_gather_varlen

        super().__init__()
        d = self.dopts = dopts
        self.__dict__["teacher"] = prepare_teacher(teacher, device)  # frozen, and kept out of state_dict()
        self.pairs = resolve_taps(student, teacher, d.taps)
        need_feats = any(d.weight(m) > 0 for m in ("rmd", "rd", "pnscd"))
        self.s_hooks = FeatureTaps(student, [s for s, _ in self.pairs]) if need_feats else None
        self.t_hooks = FeatureTaps(teacher, [t for _, t in self.pairs]) if need_feats else None
        s_ch, t_ch = self._probe_channels(student, channels, size, device)
        self.losses = nn.ModuleDict()
        with torch.random.fork_rng(devices=[]):  # the heads draw from their own stream (see above)
            torch.manual_seed(HEAD_SEED_OFFSET + seed)
            if d.weight("pmd"):
                self.losses["pmd"] = PMDLoss(temperature=d.temperature)
            if d.weight("rmd"):
                self.losses["rmd"] = RMDLoss(variant=d.rmd_variant)
            if d.weight("rd"):
                self.losses["rd"] = RDLoss(num_classes=num_classes, p=d.rd_p)
            if d.weight("pnscd"):
                self.losses["pnscd"] = PNSCDLoss(
                    s_channels=s_ch[-1], t_channels=t_ch[-1], num_classes=num_classes, dim=d.embed_dim, tau=d.tau,
                    n_negatives=d.n_negatives, n_data=n_region_samples, gather_fn=all_gather_varlen, normalize=d.pnscd_norm,
                    form=d.pnscd_form, memory_per_class=d.pnscd_memory,
                )
        self.losses.to(device)

    def _probe_channels(self, student: nn.Module, channels: int, size: int, device: torch.device | str) -> tuple[list[int], list[int]]:
        """Channels of every tapped feature, from one forward pass of each network."""
        if self.s_hooks is None:
            return [0], [0]
        x = torch.zeros(1, channels, size, size, device=device)
        was_training = student.training
        student.eval()
        with torch.inference_mode():
            student(x)
            self.teacher(x)
        student.train(was_training)
        return [self.s_hooks[m].shape[1] for m, _ in self.pairs], [self.t_hooks[m].shape[1] for _, m in self.pairs]

    def teacher_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The teacher's logits and tapped features for a batch (one forward pass, no autograd)."""
        with torch.inference_mode():
            t_logits = self.teacher(images.contiguous(memory_format=torch.channels_last))
        # inference tensors cannot join autograd: clone (into the default layout) the few the losses read
        t_logits = t_logits.clone(memory_format=torch.contiguous_format)
        t_feats = [self.t_hooks[t].clone(memory_format=torch.contiguous_format) for _, t in self.pairs] if self.t_hooks else []
        return t_logits, t_feats

    def forward(self, student: nn.Module, images: torch.Tensor, masks: torch.Tensor, seg_loss: nn.Module,
                kd_scale: float = 1.0) -> dict[str, torch.Tensor]:
        d = self.dopts
        t_logits, t_feats = self.teacher_forward(images)
        s_logits = student(images)
        s_feats = [self.s_hooks[s] for s, _ in self.pairs] if self.s_hooks else []
        parts = seg_loss(s_logits, masks)
        out = {"loss_seg": parts["loss"], "seg_ce": parts["ce"], "seg_dice": parts["dice"]}
        total = parts["loss"]
        for name, fn in self.losses.items():
            if name == "pmd":
                value = fn(s_logits, t_logits)
            elif name == "rmd":
                value = fn(s_feats, t_feats)
            elif name == "rd":
                value = fn(s_feats, t_feats, masks)
            else:
                value = fn(s_feats[-1], t_feats[-1], masks)
            out[name] = value
            total = total + (kd_scale * d.weight(name)) * value
        out["loss"] = total
        return out


def count_region_samples(masks: np.ndarray, num_classes: int) -> int:
    """M of PNSCD: the number of (slice, class present) samples in the training set."""
    return int(sum((masks == k).any(axis=(1, 2)).sum() for k in range(num_classes)))


def warmup_scale(step: int, total_steps: int, warmup: float) -> float:
    """Linear warm-up factor of the distillation weights: 0 at step 0, 1 from step
    ``round(warmup * total_steps)`` on (``warmup`` <= 0: always 1). Not in the paper."""
    if warmup <= 0:
        return 1.0
    n = max(1, round(warmup * total_steps))
    return min(1.0, step / n)


class DistillTrainer(Trainer):
    """``Trainer`` whose loss is the PNCD objective; the heads train and resume with the student.

    The distillation weights ramp linearly from 0 to their values over the first
    ``dopts.kd_warmup`` of all steps (``kd_scale`` in the step rows of log.jsonl)."""

    kind = "distill"

    def __init__(self, student: nn.Module, teacher: nn.Module, dopts: DistillOptions, teacher_source: dict, *args: Any, **kw: Any) -> None:
        self.teacher, self.dopts, self.teacher_source = teacher, dopts, teacher_source
        super().__init__(student, *args, **kw)

    def setup(self) -> None:
        s = self.data_spec
        self.pncd = PNCD(self.raw_model, self.teacher, self.dopts, s.num_classes, s.channels, s.size,
                         count_region_samples(self.train_set.masks, s.num_classes), self.device, seed=self.opts.seed)
        self.losses, self.pairs = self.pncd.losses, self.pncd.pairs

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad] + list(self.losses.parameters())

    def extra_state(self) -> dict[str, nn.Module]:
        return {"losses": self.losses}

    def after_backward(self) -> None:
        if self.dist.enabled:
            for p in self.losses.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.dist.world

    def kd_scale(self) -> float:
        return warmup_scale(self.global_step, self.opts.epochs * self.steps_per_epoch, self.dopts.kd_warmup)

    def step_info(self) -> dict[str, float]:
        return {"kd_scale": self.kd_scale()}

    def compute_loss(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.pncd(self.model, images, masks, self.seg_loss, kd_scale=self.kd_scale())

    def config_extra(self) -> dict[str, Any]:
        d = asdict(self.dopts)
        d["taps"] = [list(p) for p in self.pairs]
        d["active"] = self.dopts.active()
        return {"distill": d, "teacher": self.teacher_source}


def _parse_taps(values: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for v in values:
        if "=" not in v:
            raise PncdError(f"--taps {v!r}: write STUDENT_MODULE=TEACHER_MODULE")
        s, t = v.split("=", 1)
        pairs.append((s.strip(), t.strip()))
    return pairs


def run_distill(ctx: click.Context, teacher: str, teacher_weights: str | None, student: str, modules: str, w_pmd: float, w_rmd: float,
                    w_rd: float, w_pnscd: float, temperature: float, rmd_variant: str, tau: float, n_negatives: int, pnscd_form: str,
                    pnscd_memory: int | None, pnscd_norm: str, kd_warmup: float, student_reference: str | None, strict: bool,
                    check_teacher: bool, taps: tuple[str, ...], **p: Any) -> None:
    """``pncd distill`` (the command is :func:`pncd.commands.distill.distill_command`)."""
    from pncd import models
    from pncd.runtime import resolve_device, seed_everything, shutdown_distributed

    params = resolved_params(ctx)
    if Path(teacher).exists():  # recorded absolute, so that --resume works from any directory
        params["teacher"] = str(Path(teacher).resolve())
    mods = tuple(m.strip() for m in modules.split(",") if m.strip() and m.strip() != "none")
    bad = [m for m in mods if m not in MODULES]
    if bad:
        raise PncdError(f"--modules: unknown {bad}; valid: {', '.join(MODULES)}")
    if strict and not student_reference:
        raise PncdError("--strict compares the teacher with a run of the student alone: pass --student-reference RUN")
    if p["resume"] and _recorded_before_issue16(p["out"]):
        # a run started before these options existed continues as it began (flags still win)
        src = click.core.ParameterSource
        pnscd_form = pnscd_form if ctx.get_parameter_source("pnscd_form") not in (src.DEFAULT, None) else "crd"
        kd_warmup = kd_warmup if ctx.get_parameter_source("kd_warmup") not in (src.DEFAULT, None) else 0.0
        if ctx.get_parameter_source("clip_grad_norm") in (src.DEFAULT, None):
            p["clip_grad_norm"] = params["clip_grad_norm"] = 0.0
    t_model, t_cfg = load_teacher(teacher, teacher_weights, resolve_device(p["device"]))
    if t_cfg is not None:
        src = click.core.ParameterSource
        for key, data_key in _TEACHER_DATA_KEYS.items():
            if ctx.get_parameter_source(key) in (src.DEFAULT, None):
                p[key] = t_cfg["data"][data_key]
        if ctx.get_parameter_source("channels") in (src.DEFAULT, None):
            p["channels"] = str(t_cfg["data"]["channels"])
    spec, opts = options_from_params(p)
    if t_cfg is not None:
        for key in ("channels", "num_classes"):
            if t_cfg["data"][key] != getattr(spec, key):
                raise PncdError(f"--teacher {teacher} was trained with {key}={t_cfg['data'][key]}, not {getattr(spec, key)}")
    dopts = DistillOptions(modules=mods, w_pmd=w_pmd, w_rmd=w_rmd, w_rd=w_rd, w_pnscd=w_pnscd, temperature=temperature,
                           rmd_variant=rmd_variant, tau=tau, n_negatives=n_negatives, pnscd_norm=pnscd_norm, pnscd_form=pnscd_form,
                           pnscd_memory=pnscd_memory, kd_warmup=kd_warmup, taps=_parse_taps(taps))
    source: dict[str, Any] = {"teacher": str(teacher), "weights": teacher_weights, "model": (t_cfg or {}).get("model", {}).get("name")}
    if check_teacher and not p["resume"]:
        source["check"] = check_teacher_dice(t_model, teacher if t_cfg is not None else None, spec, resolve_device(p["device"]),
                                             max(opts.batch, 16), student_reference, strict)
    out = prepare_out(p["out"], p["resume"], p["force"])
    seed_everything(opts.seed)  # the student's initial weights depend on the seed too
    s_model = models.create(student, in_channels=spec.channels, num_classes=spec.num_classes)
    check_size(s_model, spec.size)
    try:
        DistillTrainer(s_model, t_model, dopts, source, spec, opts, out, resume=p["resume"], command_params=params).fit()
    finally:
        shutdown_distributed()
    click.echo(f"student written to {out}")


def _recorded_before_issue16(out: str | Path) -> bool:
    """Whether ``out`` holds a distillation run recorded before --pnscd-form existed (its PNSCD
    was the crd form, with no warm-up and no clipping)."""
    if not (Path(out) / ckpt.CONFIG).is_file():
        return False
    cfg = ckpt.read_run_config(out)
    return cfg.get("kind") == "distill" and "pnscd_form" not in (cfg.get("distill") or {})


def best_val_dice(run: str | Path) -> float | None:
    """The best finite ``val_dice`` of a run's epoch rows in log.jsonl (None: no such row)."""
    log = Path(run) / "log.jsonl"
    best = None
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            v = row.get("val_dice") if row.get("type") == "epoch" else None
            if isinstance(v, (int, float)) and math.isfinite(v):
                best = v if best is None else max(best, v)
    return best


def check_teacher_dice(teacher: nn.Module, teacher_run: str | None, spec: Any, device: torch.device, batch: int,
                       student_reference: str | None, strict: bool, slack: float = 0.01) -> dict[str, Any]:
    """Evaluate the frozen teacher once on the val split and compare it with a reference.

    Prints the teacher's per-case val Dice. With ``student_reference`` (a run of the student
    alone): warns when the teacher does not score above that run's best val Dice, and with
    ``strict`` raises PncdError when it scores below. Otherwise, for a teacher run, warns when
    the Dice falls more than ``slack`` below the best val Dice of the teacher's own log (other
    data or preprocessing than it was trained with). Returns what it measured (for config.json).
    Deterministic (no RNG is drawn), so it does not move the run's random streams.
    """
    from pncd.data import load_split
    from pncd.evaluate import evaluate_model

    echo = click.echo if os.environ.get("RANK", "0") == "0" else (lambda *a, **k: None)
    val = load_split(spec, "val")
    if len(val) == 0:
        echo("warning: the val split is empty; the teacher was not checked", err=True)
        return {"val_dice": None}
    dice = float(evaluate_model(teacher, val, device, batch=batch, progress=False).summary()["dice"])
    info: dict[str, Any] = {"val_dice": dice}
    if student_reference:
        ref = best_val_dice(student_reference)
        if ref is None:
            raise PncdError(f"--student-reference {student_reference}: no epoch with a val Dice in its log.jsonl")
        info.update(student_reference=str(student_reference), student_val_dice=ref)
        echo(f"teacher val Dice {dice:.4f}; the student alone ({student_reference}) reached {ref:.4f}")
        if dice < ref and strict:
            raise PncdError(f"the teacher's val Dice {dice:.4f} is below the student alone's {ref:.4f} "
                            f"({student_reference}); train the teacher longer, or drop --strict to distil anyway")
        if dice <= ref:
            echo(f"warning: the teacher ({dice:.4f}) does not beat the student alone ({ref:.4f}) on val: "
                 "distillation is unlikely to help", err=True)
        return info
    own = best_val_dice(teacher_run) if teacher_run else None
    info["teacher_log_val_dice"] = own
    echo(f"teacher val Dice {dice:.4f}" + (f" (its own log: best {own:.4f})" if own is not None else ""))
    if own is not None and dice < own - slack:
        echo(f"warning: the teacher scores {dice:.4f} on this run's val split but {own:.4f} in its own log: "
             "other data or preprocessing than it was trained with?", err=True)
    return info


_TEACHER_DATA_KEYS = {"data": "root", "size": "size", "normalization": "normalization", "num_classes": "num_classes", "split_seed": "split_seed"}


from pncd.commands.distill import distill_command  # noqa: E402  (re-exported: the click layer, torch-free)
