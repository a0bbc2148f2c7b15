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
from pncd.config import config_option, resolved_params
from pncd.errors import PncdError
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
        self.command_params = command_params or {}
        device = resolve_device(opts.device)
        self.dist, self.device = init_distributed(device)
        seed_everything(opts.seed + self.dist.rank)
        self.use_amp = bool(opts.amp and self.device.type == "cuda")

        self.train_set = load_split(data_spec, "train")
        self.val_set = load_split(data_spec, "val")
        if len(self.train_set) == 0:
            raise PncdError(f"the train split of {data_spec.root or 'the synthetic data'} is empty; check splits.json")
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
        finally:
            if self._tb is not None:
                self._tb.close()
        return summary

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        sums: dict[str, float] = {}
        n = 0
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
            if not torch.isfinite(loss):
                detail = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
                raise PncdError(
                    f"non-finite loss at epoch {epoch + 1}, step {self.global_step} ({detail}); "
                    f"lower --lr or check the data; the last good checkpoint is {self.out / ckpt.LAST}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.after_backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            vals = {k: float(v.detach()) for k, v in parts.items()}
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            self.global_step += 1
            bar.set_postfix(loss=f"{vals['loss']:.4f}")
            if self.dist.is_main and self.global_step % self.opts.log_every == 0:
                self._log({"type": "step", "epoch": epoch, "step": self.global_step, **vals, "lr": self.scheduler.get_last_lr()[0]})
        return {k: v / max(n, 1) for k, v in sums.items()}

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
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt.write_run_config(self.out, self.raw_model, self.data_spec.to_dict(), {**asdict(self.opts), **self.command_params}, kind=self.kind,
                              extra=self.config_extra())
        if self.opts.tensorboard:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tensorboard"))

    def config_extra(self) -> dict[str, Any]:
        return {}

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


# -- CLI --------------------------------------------------------------------------------------
def common_training_options(fn):
    """Options shared by ``pncd train`` and ``pncd distill`` (each defined once)."""
    opts = [
        click.option("--data", type=click.Path(file_okay=False), default=None, help="Data set directory (default: the built-in synthetic phantoms)."),
        click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory to write."),
        click.option("--epochs", type=int, default=50, show_default=True),
        click.option("--batch", type=int, default=8, show_default=True),
        click.option("--size", type=int, default=128, show_default=True, help="Square input side, divisible by 16."),
        click.option("--channels", type=click.Choice(["1", "3"]), default="1", show_default=True),
        click.option("--num-classes", type=int, default=2, show_default=True, help="Classes including background."),
        click.option("--normalization", type=click.Choice(["zscore", "minmax"]), default="zscore", show_default=True),
        click.option("--lr", type=float, default=1e-3, show_default=True),
        click.option("--min-lr", type=float, default=1e-5, show_default=True),
        click.option("--weight-decay", type=float, default=0.0, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the case-level split when there is no splits.json."),
        click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda."),
        click.option("--amp/--no-amp", default=True, show_default=True, help="Mixed precision (CUDA only)."),
        click.option("--rotation", type=float, default=15.0, show_default=True, help="Max random rotation in degrees."),
        click.option("--lesion-fraction", type=float, default=None, help="Oversample: this fraction of draws are lesion-bearing slices."),
        click.option("--steps-per-epoch", type=int, default=None, help="Fixed number of batches per epoch (default: one pass)."),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its last finished epoch."),
        click.option("--force", is_flag=True, help="Overwrite an existing run directory."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return config_option(fn)


def prepare_out(out: str, resume: bool, force: bool) -> Path:
    path = Path(out)
    if path.exists() and any(path.iterdir()) and not (resume or force):
        raise PncdError(f"{path} already exists; pass --resume to continue it, --force to overwrite, or another --out")
    if force and not resume and path.exists():
        import shutil

        shutil.rmtree(path)
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
                        lesion_fraction=p["lesion_fraction"], steps_per_epoch=p["steps_per_epoch"])
    return spec, opts


@click.command("train")
@common_training_options
@click.option("--model", "model_name", required=True, help="Registered network (see `pncd models`).")
@click.option("--pretrained", type=click.Path(dir_okay=False, exists=True), default=None, help="Local ImageNet weights for torchvision students.")
@click.pass_context
def train_command(ctx: click.Context, model_name: str, pretrained: str | None, **p: Any) -> None:
    """Train one network alone (a teacher, or a student baseline) with the paper's recipe.

    Validates every epoch (per-case Dice on the val split) and keeps best.safetensors,
    last.safetensors and config.json in --out. Also runs under torchrun (DDP).

    \b
    Examples:
      pncd train --model unet --data ../shared/data/lgg-flair --size 128 --epochs 5 --out runs/unet
      pncd train --model dcsaunet --out runs/teacher --epochs 3          # synthetic data
      pncd train --model enet --out runs/enet --resume                   # continue a run
      torchrun --nproc-per-node 2 -m pncd.cli train --model enet --out runs/enet-ddp
    """
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
