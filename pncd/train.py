"""Training one network alone (``pncd train``) and the loop that ``pncd distill`` extends.

The recipe is the paper's (section 4.1): Adam (0.9, 0.999), learning rate 1e-3 cosine-annealed
to 1e-5 over all steps, random rotation and flips, loss = cross-entropy + soft Dice.

Resuming: at the end of every epoch the weights (``last.safetensors``) and the training state
(``last_state.pt``: optimizer, scheduler, RNG states, epoch, best score) are written atomically.
``--resume`` restarts at the first unfinished epoch with every RNG restored, and the epoch's
sample order depends only on (seed, epoch), so on the CPU a resumed run ends with the same
weights as an uninterrupted one.

Distributed: under ``torchrun`` the same command wraps the model in DistributedDataParallel
(nccl on CUDA, gloo on CPU); each rank draws its share of the epoch's sample order; rank 0
validates, logs and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import click
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pncd import checkpoint as ckpt
from pncd.config import resolved_params
from pncd.errors import PncdError, RunFailed
from pncd.runtime import Dist, init_distributed, resolve_device, rng_state, seed_everything, set_rng_state, shutdown_distributed


@dataclass
class TrainOptions:
    """Everything a training run depends on (saved in config.json as ``options``)."""

    epochs: int = 50
    batch: int = 8
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.0
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    amp: bool = True
    rotation: float = 15.0
    lesion_fraction: float | None = None
    steps_per_epoch: int | None = None
    log_every: int = 10
    tensorboard: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    # Clip the global gradient norm of every trained parameter to this (0: off). 0 keeps
    # ``pncd train``'s recipe (the paper's) unchanged; ``pncd distill`` defaults to 5.
    clip_grad_norm: float = 0.0


class TermMonitor:
    """Every loss term of a run, step by step: each term's epoch mean and maximum, and anomalies.

    An anomaly is a non-finite value, or a value above ``factor`` times the term's running mean
    (an exponential moving average with ``decay``, about the last ten steps), once the term has
    been seen ``warmup`` times. ``update`` returns the anomalies of one step as
    ``(term, value, running mean or None)``; non-finite values stay out of the statistics.
    """

    def __init__(self, factor: float = 10.0, decay: float = 0.9, warmup: int = 5) -> None:
        self.factor, self.decay, self.warmup = factor, decay, warmup
        self.ema: dict[str, float] = {}
        self.seen: dict[str, int] = {}
        self.reset_epoch()

    def reset_epoch(self) -> None:
        self.sums: dict[str, float] = {}
        self.maxs: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def update(self, vals: dict[str, float]) -> list[tuple[str, float, float | None]]:
        anomalies: list[tuple[str, float, float | None]] = []
        for k, v in vals.items():
            if not math.isfinite(v):
                anomalies.append((k, v, None))
                continue
            ema, seen = self.ema.get(k), self.seen.get(k, 0)
            if ema is not None and seen >= self.warmup and ema > 1e-8 and v > self.factor * ema:
                anomalies.append((k, v, ema))
            self.ema[k] = v if ema is None else self.decay * ema + (1 - self.decay) * v
            self.seen[k] = seen + 1
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.maxs[k] = max(self.maxs.get(k, v), v)
            self.counts[k] = self.counts.get(k, 0) + 1
        return anomalies

    def epoch_summary(self) -> dict[str, float]:
        """``{term: mean, term_max: maximum}`` over the epoch's finite values."""
        out: dict[str, float] = {}
        for k in self.sums:
            out[k] = self.sums[k] / self.counts[k]
        for k in self.sums:
            out[f"{k}_max"] = self.maxs[k]
        return out


class EpochSampler(torch.utils.data.Sampler[int]):
    """Sample order that depends only on (seed, epoch): uniform shuffle, or weighted draws
    (lesion oversampling) with replacement; under DDP each rank takes every world-th index."""

    def __init__(self, n: int, num_samples: int, seed: int, weights: torch.Tensor | None = None, rank: int = 0, world: int = 1) -> None:
        self.n, self.num_samples, self.seed, self.weights = n, num_samples, seed, weights
        self.rank, self.world, self.epoch = rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        total = self.num_samples * self.world
        if self.weights is not None:
            return torch.multinomial(self.weights, total, replacement=True, generator=g)
        reps = math.ceil(total / self.n)
        return torch.cat([torch.randperm(self.n, generator=g) for _ in range(reps)])[:total]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return self.num_samples


class Trainer:
    """A readable training loop. ``compute_loss`` is the one method distillation overrides."""

    kind = "train"

    def __init__(self, model: nn.Module, data_spec: Any, opts: TrainOptions, out: Path, resume: bool = False, command_params: dict | None = None) -> None:
        from pncd.data import load_split

        self.opts, self.out, self.resume, self.data_spec = opts, Path(out), resume, data_spec
        # --force onto an existing run: train beside it, swap in at the end (see prepare_out)
        self.final_out = self.out
        if _STAGED.pop(self.out.resolve(), None) is not None and not resume:
            self.out = staging_dir(self.final_out)
        self.command_params = command_params or {}
        device = resolve_device(opts.device)
        self.dist, self.device = init_distributed(device)
        seed_everything(opts.seed + self.dist.rank)
        self.use_amp = bool(opts.amp and self.device.type == "cuda")

        self.train_set = load_split(data_spec, "train")
        self.val_set = load_split(data_spec, "val")
        if len(self.train_set) == 0:
            raise PncdError(f"the train split of {data_spec.root or 'the synthetic data'} is empty; check splits.json")
        if self.dist.is_main and not (np.asarray(self.train_set.masks) > 0).any():
            click.echo(f"warning: no mask of the train split of {data_spec.root or 'the synthetic data'} has a "
                       "foreground pixel; the network will learn to predict background only (check the masks)", err=True)
        self.model = model.to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.raw_model = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.loader = self._make_loader()
        self.steps_per_epoch = len(self.loader)
        self.setup()
        self.optimizer = torch.optim.Adam(self.trainable_parameters(), lr=opts.lr, betas=(0.9, 0.999), weight_decay=opts.weight_decay)
        # --clip-grad-norm acts on everything the optimizer trains (the student and any heads)
        self._clip_params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.monitor = TermMonitor()
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, opts.epochs * self.steps_per_epoch), eta_min=opts.min_lr
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        from pncd.losses import SegLoss

        self.seg_loss = SegLoss(data_spec.num_classes)
        self.start_epoch, self.best = 0, -1.0
        self.global_step = 0
        self._tb = None

    # -- pieces a subclass may extend -------------------------------------------------------
    def setup(self) -> None:
        """Build extra training modules (called once the model, device and data are ready)."""

    def after_backward(self) -> None:
        """Called between backward and the optimizer step (DDP all-reduce of extra modules)."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def extra_state(self) -> dict[str, Any]:
        """Modules besides the model that train and must survive --resume (distillation heads)."""
        return {}

    def compute_loss(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.model(images)
        return self.seg_loss(logits, masks)

    def step_info(self) -> dict[str, float]:
        """Values besides the loss terms that the step rows of log.jsonl record (e.g. warm-up)."""
        return {}

    # -- the loop ---------------------------------------------------------------------------
    def _make_loader(self) -> torch.utils.data.DataLoader:
        from pncd.data import SegDataset, lesion_sampler_weights

        o = self.opts
        ds = SegDataset(self.train_set, augment=True, rotation=o.rotation, seed=o.seed)
        weights = lesion_sampler_weights(self.train_set, o.lesion_fraction) if o.lesion_fraction else None
        per_rank = o.steps_per_epoch * o.batch if o.steps_per_epoch else math.ceil(len(ds) / self.dist.world)
        self.sampler = EpochSampler(len(ds), per_rank, o.seed, weights, self.dist.rank, self.dist.world)
        return torch.utils.data.DataLoader(
            ds,
            batch_size=o.batch,
            sampler=self.sampler,
            num_workers=o.workers,
            drop_last=len(ds) >= o.batch,
            pin_memory=self.device.type == "cuda",
            persistent_workers=o.workers > 0,
            generator=torch.Generator().manual_seed(o.seed),
        )

    def fit(self) -> dict[str, Any]:
        if self.dist.is_main:
            self._prepare_out()
        self.dist.barrier()
        if self.resume:
            self._load_state()
        o = self.opts
        summary: dict[str, Any] = {}
        finished = False
        try:
            for epoch in range(self.start_epoch, o.epochs):
                t0 = time.time()
                self.sampler.set_epoch(epoch)
                train_log = self._train_epoch(epoch)
                val = self.validate() if self.dist.is_main else {}
                if self.dist.is_main:
                    dice = val.get("dice", float("nan"))
                    improved = dice > self.best
                    if improved:
                        self.best = dice
                        ckpt.save_weights(self.raw_model, self.out / ckpt.BEST, {"epoch": str(epoch)})
                    ckpt.save_weights(self.raw_model, self.out / ckpt.LAST, {"epoch": str(epoch)})
                    self._save_state(epoch)
                    row = {"type": "epoch", "epoch": epoch, **train_log, **{f"val_{k}": v for k, v in val.items()},
                           "best_val_dice": self.best, "lr": self.scheduler.get_last_lr()[0], "seconds": round(time.time() - t0, 2)}
                    self._log(row)
                    tqdm.write(
                        f"epoch {epoch + 1}/{o.epochs}  loss {train_log['loss']:.4f}  val dice {dice:.4f}"
                        f"{'  (best)' if improved else ''}  {row['seconds']:.0f}s"
                    )
                    summary = row
                self.dist.barrier()
            finished = True
        finally:
            if self._tb is not None:
                self._tb.close()
            if self.dist.is_main and self.out != self.final_out:  # --force: the old run goes only now
                from pncd.io import swap_into

                if finished:
                    swap_into(self.out, self.final_out)
                else:
                    shutil.rmtree(self.out, ignore_errors=True)
        return summary

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch; returns each term's mean and maximum (``term``, ``term_max``). Every
        ``log_every`` steps a step row records every term; anomalies (see ``TermMonitor``) are
        written to the console and as ``anomaly`` rows, with their step, whenever they occur."""
        self.model.train()
        self.monitor.reset_epoch()
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{self.opts.epochs}", leave=False, disable=not self.dist.is_main, unit="batch")
        crash_at = int(os.environ.get("PNCD_TEST_CRASH_AT_STEP", "-1"))
        for images, masks in bar:
            if self.global_step == crash_at:  # test hook: simulate a kill mid-epoch (no clean-up)
                os._exit(137)
            images = images.to(self.device, non_blocking=True)
            masks = masks.to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                parts = self.compute_loss(images, masks)
            loss = parts["loss"]
            vals = {k: float(v.detach()) for k, v in parts.items()}
            self._report(epoch, self.monitor.update(vals))
            if not torch.isfinite(loss):
                detail = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
                raise RunFailed(
                    f"non-finite loss at epoch {epoch + 1}, step {self.global_step} ({detail}); "
                    f"lower --lr or check the data; {self._last_good()}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.after_backward()
            if self.opts.clip_grad_norm > 0:
                self.scaler.unscale_(self.optimizer)
                norm = float(torch.nn.utils.clip_grad_norm_(self._clip_params, self.opts.clip_grad_norm))
                vals["grad_norm"] = norm  # before clipping
                self._report(epoch, self.monitor.update({"grad_norm": norm}))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            info = self.step_info()
            self.scheduler.step()
            self.global_step += 1
            bar.set_postfix(loss=f"{vals['loss']:.4f}")
            if self.dist.is_main and self.global_step % self.opts.log_every == 0:
                self._log({"type": "step", "epoch": epoch, "step": self.global_step, **vals, **info, "lr": self.scheduler.get_last_lr()[0]})
        return self.monitor.epoch_summary()

    def _report(self, epoch: int, anomalies: list[tuple[str, float, float | None]]) -> None:
        """Console line and ``anomaly`` row per anomalous term; ``step`` counts as in step rows."""
        if not anomalies or not self.dist.is_main:
            return
        step = self.global_step + 1
        for term, value, mean in anomalies:
            why = "non-finite" if mean is None else f"{value / mean:.0f}x its running mean {mean:.4g}"
            tqdm.write(f"warning: step {step} (epoch {epoch + 1}): {term} = {value:.4g} ({why})")
            row = {"type": "anomaly", "epoch": epoch, "step": step, "term": term, "value": value if math.isfinite(value) else str(value)}
            self._log({**row, "running_mean": mean} if mean is not None else row)

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        from pncd.evaluate import evaluate_model

        if len(self.val_set) == 0:
            return {}
        result = evaluate_model(self.raw_model, self.val_set, self.device, batch=max(self.opts.batch, 16), progress=False)
        s = result.summary()
        return {"dice": s["dice"], "dice_std": s["dice_std"], "dice_lesion_slices": s.get("dice_lesion_slices")}

    # -- run directory ----------------------------------------------------------------------
    def _prepare_out(self) -> None:
        from pncd.io import owned_names, write_owned

        if self.out != self.final_out and self.out.exists():
            shutil.rmtree(self.out)  # left by an earlier --force that was killed
        self.out.mkdir(parents=True, exist_ok=True)
        write_owned(self.out, owned_names(self.out) | set(RUN_FILES))
        ckpt.write_run_config(self.out, self.raw_model, self.data_spec.to_dict(), {**asdict(self.opts), **self.command_params}, kind=self.kind,
                              extra=self.config_extra())
        if self.opts.tensorboard:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tensorboard"))

    def config_extra(self) -> dict[str, Any]:
        return {}

    def _last_good(self) -> str:
        """Where the NaN message sends the user: a checkpoint that exists, or the truth."""
        last = self.out / ckpt.LAST
        if self.out != self.final_out:
            return f"nothing was kept of this run, and {self.final_out} still holds the previous run (--force)"
        if last.is_file() and (self.out / ckpt.STATE).is_file():
            return f"the last good checkpoint is {last} (--resume continues from it)"
        return "no checkpoint was written yet (it diverged in the first epoch)"

    def _log(self, row: dict[str, Any]) -> None:
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            step = row.get("step", self.global_step)
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                    self._tb.add_scalar(f"{row['type']}/{k}", v, step)

    def _save_state(self, epoch: int) -> None:
        state = {
            "epoch": torch.tensor(epoch),
            "global_step": torch.tensor(self.global_step),
            "best": torch.tensor(self.best, dtype=torch.float64),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {k: v for k, v in self.scheduler.state_dict().items()},
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "extra": {k: m.state_dict() for k, m in self.extra_state().items()},
        }
        ckpt.save_state(self.out / ckpt.STATE, state)

    def _load_state(self) -> None:
        path = self.out / ckpt.STATE
        if not path.is_file():
            raise PncdError(f"--resume: {path} not found; the run has no finished epoch to resume from")
        cfg = ckpt.read_run_config(self.out)
        want = ckpt.unwrap(self.raw_model).pncd_spec["name"]
        if cfg["model"]["name"] != want:
            raise PncdError(f"--resume: {self.out} is a run of {cfg['model']['name']!r}, not {want!r}")
        state = ckpt.load_state(path)
        ckpt.load_weights(ckpt.unwrap(self.raw_model), self.out / ckpt.LAST)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        for k, m in self.extra_state().items():
            m.load_state_dict(state["extra"][k])
        set_rng_state(state["rng"])
        self.start_epoch = int(state["epoch"]) + 1
        self.global_step = int(state["global_step"])
        self.best = float(state["best"])
        if self.dist.is_main:
            tqdm.write(f"resuming {self.out} at epoch {self.start_epoch + 1}")


RUN_FILES = (ckpt.CONFIG, ckpt.BEST, ckpt.LAST, ckpt.STATE, "log.jsonl", "tensorboard")  # what a run writes

# --force: the new run is written here (beside the old) and swapped in by Trainer.fit at the end.
_STAGED: dict[Path, Path] = {}


def staging_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.pncd-new"


def prepare_out(out: str, resume: bool, force: bool, protect: tuple[str | Path | None, ...] = ()) -> Path:
    """Check --out before anything is loaded: an existing run needs --resume or --force; --out
    must not be a file, nor (with --force) the data or a run this one reads. With --force the old
    run stays untouched until the new one is complete (see ``Trainer.fit``)."""
    from pncd.io import check_output

    path = Path(out)
    if resume:
        if path.exists() and not path.is_dir():
            raise PncdError(f"--out {path} is a file, not a run directory; pass the run's directory")
        if not (path / ckpt.STATE).is_file():
            have = "no finished epoch" if (path / ckpt.CONFIG).is_file() else "no run"
            raise PncdError(f"--resume: {path} has {have} to resume from (no {ckpt.STATE}); "
                            "start it again with --force, or without --resume in a new --out")
        check_resume(path)
        return path
    ctx = click.get_current_context(silent=True)
    if protect == () and ctx is not None:  # the inputs this run reads: --force must never replace them
        protect = (ctx.params.get("data"), ctx.params.get("teacher") if ctx.params.get("teacher") and
                   Path(ctx.params["teacher"]).exists() else None)
    try:
        check_output(path, force, protect=protect, empty_ok=True)
    except PncdError as e:
        if "already exists" in str(e):
            raise PncdError(f"{path} already exists; pass --resume to continue it, --force to replace it, "
                            "or another --out") from None
        raise
    if force and path.exists() and any(path.iterdir()):
        _STAGED[path.resolve()] = path
    return path


def check_size(model: nn.Module, size: int) -> None:
    multiple = getattr(model, "size_multiple", 16)
    if size % multiple:
        name = model.pncd_spec["name"]
        raise PncdError(f"--size {size} does not suit {name}: use a multiple of {multiple} (e.g. {max(multiple, size // multiple * multiple)})")


def options_from_params(p: dict[str, Any]) -> tuple[Any, TrainOptions]:
    from pncd.data import DataSpec

    if p["size"] % 16:
        raise PncdError(f"--size {p['size']} is not divisible by 16")
    # an absolute root, so later stages find the data from any working directory
    root = str(Path(p["data"]).resolve()) if p["data"] else None
    spec = DataSpec(root=root, size=p["size"], channels=int(p["channels"]), num_classes=p["num_classes"],
                    normalization=p["normalization"], split_seed=p["split_seed"])
    opts = TrainOptions(epochs=p["epochs"], batch=p["batch"], lr=p["lr"], min_lr=p["min_lr"], weight_decay=p["weight_decay"],
                        seed=p["seed"], workers=p["workers"], device=p["device"], amp=p["amp"], rotation=p["rotation"],
                        lesion_fraction=p["lesion_fraction"], steps_per_epoch=p["steps_per_epoch"],
                        log_every=p.get("log_every") or 10, clip_grad_norm=p.get("clip_grad_norm") or 0.0)
    return spec, opts


def run_train(ctx: click.Context, model_name: str, pretrained: str | None, p: dict[str, Any]) -> None:
    """``pncd train`` (the command is :func:`pncd.commands.training.train_command`)."""
    from pncd import models

    params = resolved_params(ctx)
    spec, opts = options_from_params(p)
    out = prepare_out(p["out"], p["resume"], p["force"])
    kw = {"pretrained": pretrained} if pretrained else {}
    seed_everything(opts.seed)  # the initial weights depend on the seed too
    model = models.create(model_name, in_channels=spec.channels, num_classes=spec.num_classes, **kw)
    model.pncd_spec.pop("pretrained", None)  # the weights are in the run; later stages need no file
    check_size(model, spec.size)
    try:
        Trainer(model, spec, opts, out, resume=p["resume"], command_params=params).fit()
    finally:
        shutdown_distributed()
    click.echo(f"run written to {out}")


# the click layer, torch-free, lives in pncd.commands.training
from pncd.commands.training import (  # noqa: E402  (re-exported: pncd.distill, tests)
    RESUME_MAY_CHANGE, check_resume, common_training_options, recorded_options, train_command)
