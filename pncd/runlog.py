"""What a training run reports: ``log.jsonl`` rows (and TensorBoard scalars), per-term statistics
and anomalies (:class:`TermMonitor`)."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

LOG = "log.jsonl"


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


GRADIENT_SAMPLES = 4  # steps per epoch at which each term's gradient is measured


class GradientShares:
    """Each loss term's gradient on the trained network, sampled a few steps per epoch: the epoch
    means of its norm (``grad_norm_TERM``) and of its share of the terms' summed norms
    (``grad_share_TERM``; the shares of one step add up to 1)."""

    def __init__(self) -> None:
        self.reset_epoch()

    def reset_epoch(self) -> None:
        self.norms: dict[str, list[float]] = {}
        self.shares: dict[str, list[float]] = {}

    def update(self, norms: dict[str, float]) -> None:
        total = sum(v for v in norms.values() if math.isfinite(v))
        for k, v in norms.items():
            self.norms.setdefault(k, []).append(v)
            self.shares.setdefault(k, []).append(v / total if total > 0 and math.isfinite(v) else 0.0)

    def epoch_summary(self) -> dict[str, float]:
        out = {f"grad_norm_{k}": sum(v) / len(v) for k, v in self.norms.items()}
        out.update({f"grad_share_{k}": sum(v) / len(v) for k, v in self.shares.items()})
        return out


class RunLog:
    """Appends rows to ``OUT/log.jsonl`` (and, when ``tensorboard`` and the package is there,
    their numbers to ``OUT/tensorboard``). Only the main process of a run writes one."""

    def __init__(self, out: Path, tensorboard: bool) -> None:
        self.path = Path(out) / LOG
        self._tb = None
        if tensorboard:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(out) / "tensorboard"))

    def write(self, row: dict[str, Any], global_step: int) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            step = row.get("step", global_step)
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                    self._tb.add_scalar(f"{row['type']}/{k}", v, step)

    def anomalies(self, epoch: int, step: int, anomalies: list[tuple[str, float, float | None]]) -> None:
        """Console line and ``anomaly`` row per anomalous term (``step`` counts as in step rows)."""
        for term, value, mean in anomalies:
            why = "non-finite" if mean is None else f"{value / mean:.0f}x its running mean {mean:.4g}"
            tqdm.write(f"warning: step {step} (epoch {epoch + 1}): {term} = {value:.4g} ({why})")
            row = {"type": "anomaly", "epoch": epoch, "step": step, "term": term, "value": value if math.isfinite(value) else str(value)}
            self.write({**row, "running_mean": mean} if mean is not None else row, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
