"""The training loop that ``pncd train`` runs and ``pncd distill`` extends (:class:`Trainer`).

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

import math
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pncd import checkpoint as ckpt
from pncd.console import progress, warn
from pncd.errors import PncdError, RunFailed
from pncd.options import TrainOptions
from pncd.rundir import RUN_FILES, staging_dir, take_staged, writing
from pncd.runlog import GRADIENT_SAMPLES, GradientShares, RunLog, TermMonitor
from pncd.runtime import init_distributed, resolve_device, seed_everything


def _to_device(x: Any, device: torch.device) -> Any:
    """Tensors, and lists or tuples of them (a batch's extra items), moved to ``device``."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    return type(x)(_to_device(v, device) for v in x) if isinstance(x, (list, tuple)) else x


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
    """A readable training loop. ``compute_loss`` is the one method distillation overrides.

    ``on_step``: callables given the trainer after every optimizer step (``global_step`` counts
    the steps done), e.g. to watch a run or to stop it."""

    kind = "train"

    def __init__(self, model: nn.Module, data_spec: Any, opts: TrainOptions, out: Path, resume: bool = False,
                 command_params: dict | None = None, on_step: Sequence[Callable[[Trainer], None]] = ()) -> None:
        from pncd.data import load_split

        self.opts, self.out, self.resume, self.data_spec = opts, Path(out), resume, data_spec
        # --force onto an existing run: train beside it, swap in at the end (see pncd.rundir)
        self.final_out = self.out
        if take_staged(self.out) and not resume:
            self.out = staging_dir(self.final_out)
        self.command_params = command_params or {}
        self.on_step = list(on_step)
        device = resolve_device(opts.device)
        self.dist, self.device = init_distributed(device)
        seed_everything(opts.seed + self.dist.rank)
        self.use_amp = bool(opts.amp and self.device.type == "cuda")
        from pncd.training.memory import activation_bytes, check_fits

        name = getattr(ckpt.unwrap(model), "pncd_spec", {}).get("name", type(model).__name__)
        per_sample = activation_bytes(model, data_spec.channels, data_spec.size)
        check_fits(per_sample, 1, data_spec.size, self.device, self.use_amp, name)  # before the data are loaded

        self.train_set = load_split(data_spec, "train")
        self.val_set = load_split(data_spec, "val")
        if len(self.train_set) == 0:
            raise PncdError(f"the train split of {data_spec.root or 'the synthetic data'} is empty; check splits.json")
        if opts.batch > len(self.train_set):  # one batch holds the whole split at most
            if self.dist.is_main:
                warn(f"note: --batch {opts.batch} is more than the {len(self.train_set)} slices of the train split; "
                     f"training with --batch {len(self.train_set)}")
            self.opts = opts = replace(opts, batch=len(self.train_set))
        check_fits(per_sample, opts.batch, data_spec.size, self.device, self.use_amp, name)
        self._weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        self._created: list[Path] = []  # what this call created in --out (removed if no epoch finishes)
        if self.dist.is_main and not (np.asarray(self.train_set.masks) > 0).any():
            warn(f"warning: no mask of the train split of {data_spec.root or 'the synthetic data'} has a "
                       "foreground pixel; the network will learn to predict background only (check the masks)")
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
        self.gradients = GradientShares()
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, opts.epochs * self.steps_per_epoch), eta_min=opts.min_lr
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        from pncd.losses import SegLoss

        self.seg_loss = SegLoss(data_spec.num_classes)
        self.start_epoch, self.best = 0, -1.0
        self.global_step = 0
        self.log: RunLog | None = None

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

    def compute_loss(self, images: torch.Tensor, masks: torch.Tensor, *extra: Any) -> dict[str, torch.Tensor]:
        """The step's loss terms (``loss``: the total). ``extra``: what the dataset's items carry
        beyond (image, mask), batched and on the device (distillation's cached teacher outputs)."""
        logits = self.model(images)
        return self.seg_loss(logits, masks)

    def term_gradient_norms(self, parts: dict[str, torch.Tensor]) -> dict[str, float]:
        """The norm of each weighted loss term's gradient on the network being trained ({}: the
        loss has one term; a distillation names each of its terms)."""
        return {}

    def step_info(self) -> dict[str, float]:
        """Values besides the loss terms that the step rows of log.jsonl record (e.g. warm-up)."""
        return {}

    def config_extra(self) -> dict[str, Any]:
        """Sections besides model, data and options that config.json records."""
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
        """Train from ``start_epoch`` (0, or after the last finished epoch with --resume) to the
        end; returns the last epoch row written ({} on other ranks, or when none was left)."""
        summary: dict[str, Any] = {}
        finished = False
        try:
            if self.dist.is_main:
                self._prepare_out()
            self.dist.barrier()
            if self.resume:
                self._load_state()
            for epoch in range(self.start_epoch, self.opts.epochs):
                t0 = time.time()
                self.sampler.set_epoch(epoch)
                train_log = self._train_epoch(epoch)
                if self.dist.is_main:
                    summary = self._end_epoch(epoch, train_log, t0)
                self.dist.barrier()
            finished = True
        finally:
            if self.log is not None:
                self.log.close()
            if not finished and not (self.out / ckpt.STATE).is_file():
                self._remove_created()  # no epoch finished: a config-only folder is no run
            if self.dist.is_main and self.out != self.final_out:  # --force: the old run goes only now
                from pncd.io import swap_into

                try:
                    if finished:
                        swap_into(self.out, self.final_out)
                finally:
                    shutil.rmtree(self.out, ignore_errors=True)
        return summary

    def _end_epoch(self, epoch: int, train_log: dict[str, float], t0: float) -> dict[str, Any]:
        """Validate, keep the checkpoints, write and print the epoch row (main process only)."""
        val = self.validate()
        dice = val.get("dice", float("nan"))
        improved = dice > self.best
        if improved:
            self.best = dice
            with writing(self.out / ckpt.BEST, need=self._weight_bytes):
                ckpt.save_weights(self.raw_model, self.out / ckpt.BEST, {"epoch": str(epoch)})
        with writing(self.out / ckpt.LAST, need=self._weight_bytes):
            ckpt.save_weights(self.raw_model, self.out / ckpt.LAST, {"epoch": str(epoch)})
        with writing(self.out / ckpt.STATE, need=3 * self._weight_bytes):  # weights + Adam's two moments
            self._save_state(epoch)
        row = {"type": "epoch", "epoch": epoch, **train_log, **{f"val_{k}": v for k, v in val.items()},
               "best_val_dice": self.best, "lr": self.scheduler.get_last_lr()[0], "seconds": round(time.time() - t0, 2)}
        self._log(row)
        tqdm.write(
            f"epoch {epoch + 1}/{self.opts.epochs}  loss {train_log['loss']:.4f}  val dice {dice:.4f}"
            f"{'  (best)' if improved else ''}  {row['seconds']:.0f}s"
        )
        return row

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch; returns each term's mean and maximum (``term``, ``term_max``). Every
        ``log_every`` steps a step row records every term; anomalies (see ``TermMonitor``) are
        written to the console and as ``anomaly`` rows, with their step, whenever they occur."""
        self.model.train()
        self.monitor.reset_epoch()
        self.gradients.reset_epoch()
        bar = progress(self.loader, desc=f"epoch {epoch + 1}/{self.opts.epochs}", disable=not self.dist.is_main, unit="batch")
        for images, masks, *extra in bar:
            vals, info = self._step(epoch, images, masks, *extra)
            bar.set_postfix(loss=f"{vals['loss']:.4f}")
            if self.dist.is_main and self.global_step % self.opts.log_every == 0:
                self._log({"type": "step", "epoch": epoch, "step": self.global_step, **vals, **info, "lr": self.scheduler.get_last_lr()[0]})
            for callback in self.on_step:
                callback(self)
        return {**self.monitor.epoch_summary(), **self.gradients.epoch_summary()}

    def _step(self, epoch: int, images: torch.Tensor, masks: torch.Tensor, *extra: Any) -> tuple[dict[str, float], dict[str, float]]:
        """One optimizer step; returns the step's terms (and grad_norm) and ``step_info``."""
        images = images.to(self.device, non_blocking=True)
        masks = masks.to(self.device, non_blocking=True)
        extra = tuple(_to_device(x, self.device) for x in extra)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            parts = self.compute_loss(images, masks, *extra)
        loss = parts["loss"]
        if self.global_step % max(1, self.steps_per_epoch // GRADIENT_SAMPLES) == 0:
            self.gradients.update(self.term_gradient_norms(parts))
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
        if self.opts.clip_grad_norm:  # None (a Trainer built directly) or 0: off
            self.scaler.unscale_(self.optimizer)
            norm = float(torch.nn.utils.clip_grad_norm_(self._clip_params, self.opts.clip_grad_norm))
            vals["grad_norm"] = norm  # before clipping
            self._report(epoch, self.monitor.update({"grad_norm": norm}))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        info = self.step_info()
        self.scheduler.step()
        self.global_step += 1
        return vals, info

    def _report(self, epoch: int, anomalies: list[tuple[str, float, float | None]]) -> None:
        if anomalies and self.dist.is_main and self.log is not None:
            self.log.anomalies(epoch, self.global_step + 1, anomalies)

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        from pncd.evaluation.run import evaluate_model

        if len(self.val_set) == 0:
            return {}
        result = evaluate_model(self.raw_model, self.val_set, self.device, batch=max(self.opts.batch, 16), progress=False)
        s = result.summary()
        return {"dice": s["dice"], "dice_std": s["dice_std"], "dice_lesion_slices": s.get("dice_lesion_slices")}

    # -- run directory and checkpoints ------------------------------------------------------
    def _prepare_out(self) -> None:
        from pncd.io import OWNED_MARKER, owned_names, write_owned

        if self.out != self.final_out and self.out.exists():
            shutil.rmtree(self.out)  # left by an earlier --force that was killed
        if not self.resume:  # what this call adds to --out, removed again if it ends before an epoch finishes
            self._created = [self.out] if not self.out.exists() else \
                [self.out / n for n in (*RUN_FILES, OWNED_MARKER) if not (self.out / n).exists()]
        with writing(self.out / ckpt.CONFIG):
            self.out.mkdir(parents=True, exist_ok=True)
            write_owned(self.out, owned_names(self.out) | set(RUN_FILES), kind="run")
            ckpt.write_run_config(self.out, self.raw_model, self.data_spec.to_dict(), {**asdict(self.opts), **self.command_params},
                                  kind=self.kind, extra=self.config_extra())
            self.log = RunLog(self.out, self.opts.tensorboard)

    def _remove_created(self) -> None:
        """Remove what this call created in --out (the folder itself, or the run files it added)."""
        for p in getattr(self, "_created", []):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists() or p.is_symlink():
                p.unlink(missing_ok=True)

    def _last_good(self) -> str:
        """Where the NaN message sends the user: a checkpoint that exists, or the truth."""
        last = self.out / ckpt.LAST
        if self.out != self.final_out:
            return f"nothing was kept of this run, and {self.final_out} still holds the previous run (--force)"
        if last.is_file() and (self.out / ckpt.STATE).is_file():
            return f"the last good checkpoint is {last} (--resume continues from it)"
        return "no checkpoint was written yet (it diverged in the first epoch)"

    def _log(self, row: dict[str, Any]) -> None:
        assert self.log is not None, "the run directory is prepared first (fit)"
        with writing(self.out / "log.jsonl"):
            self.log.write(row, self.global_step)

    def _save_state(self, epoch: int) -> None:
        ckpt.save_training_state(self.out / ckpt.STATE, epoch, self.global_step, self.best, self.optimizer, self.scheduler,
                                 self.scaler, self.extra_state())

    def _load_state(self) -> None:
        path = self.out / ckpt.STATE
        if not path.is_file():
            raise PncdError(f"--resume: {path} not found; the run has no finished epoch to resume from")
        cfg = ckpt.read_run_config(self.out)
        want = getattr(ckpt.unwrap(self.raw_model), "pncd_spec")["name"]
        if cfg["model"]["name"] != want:
            raise PncdError(f"--resume: {self.out} is a run of {cfg['model']['name']!r}, not {want!r}")
        ckpt.load_weights(ckpt.unwrap(self.raw_model), self.out / ckpt.LAST)
        self.start_epoch, self.global_step, self.best = ckpt.load_training_state(
            path, self.optimizer, self.scheduler, self.scaler, self.extra_state())
        if self.dist.is_main:
            tqdm.write(f"resuming {self.out} at epoch {self.start_epoch + 1}")
