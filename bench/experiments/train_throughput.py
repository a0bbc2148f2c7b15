"""Training throughput of every registered network: images per second for one full step
(forward, CE + soft-Dice loss, backward, Adam update) on synthetic batches, after warm-up.

Run it as a script ::

    python bench/experiments/train_throughput.py                          # 256 x 256, batch 8, CPU, all models
    python bench/experiments/train_throughput.py --models enet,dcsaunet --steps 5 --json train_tput.json
    python bench/experiments/train_throughput.py --size 64 --steps 2      # quick check that it runs

Numbers are for this machine and thread count only (both are printed and written to the
JSON); on a shared CPU repeat a run before trusting a difference. Each network starts from its
own random initialisation; inputs are noise images with random square "lesions" as labels,
so the loss and its gradients look like real segmentation work.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch


def _batch(batch: int, channels: int, size: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, channels, size, size, generator=g)
    masks = torch.zeros(batch, size, size, dtype=torch.long)
    for b in range(batch):
        side = int(torch.randint(size // 8, size // 3, (1,), generator=g))
        y, x = (int(v) for v in torch.randint(0, size - side, (2,), generator=g))
        masks[b, y : y + side, x : x + side] = int(torch.randint(1, num_classes, (1,), generator=g))
        images[b, :, y : y + side, x : x + side] += 2.0  # a visible lesion
    return images, masks


def _loss_fn(num_classes: int):
    """pncd's CE + soft-Dice segmentation loss (plain cross-entropy if it is unavailable)."""
    try:
        from pncd.losses import SegLoss
    except ImportError:
        return torch.nn.CrossEntropyLoss()
    seg = SegLoss(num_classes)
    return lambda logits, target: seg(logits, target)["loss"]


def measure(name: str, size: int, batch: int, steps: int, warmup: int, channels: int = 1, num_classes: int = 2,
            device: str = "cpu") -> dict[str, Any]:
    """Time ``steps`` optimisation steps of ``name`` after ``warmup`` untimed ones."""
    from pncd import models

    torch.manual_seed(0)
    model = models.create(name, in_channels=channels, num_classes=num_classes).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    loss_fn = _loss_fn(num_classes)
    images, masks = (t.to(device) for t in _batch(batch, channels, size, num_classes, seed=0))

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), masks)
        loss.backward()
        opt.step()
        return float(loss.detach())  # float() synchronises on an accelerator

    for _ in range(warmup):
        step()
    times = []
    loss = float("nan")
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    total = sum(times)
    return {
        "model": name,
        "parameters": models.count_parameters(model),
        "images_per_s": steps * batch / total,
        "step_s_mean": total / steps,
        "step_s_min": min(times),
        "final_loss": loss,
    }


def _table(rows: list[dict[str, Any]]) -> str:
    header = ["model", "params (M)", "images/s", "step (s)", "min step (s)"]
    body = [[r["model"], f"{r['parameters'] / 1e6:.3f}", f"{r['images_per_s']:.2f}", f"{r['step_s_mean']:.3f}",
             f"{r['step_s_min']:.3f}"] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)) for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python bench/experiments/train_throughput.py --size 64 --steps 2 --models enet")
    parser.add_argument("--size", type=int, default=256, help="square input side (default 256)")
    parser.add_argument("--batch", type=int, default=8, help="images per step (default 8)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--models", default="", help="comma-separated names (default: every registered model)")
    parser.add_argument("--channels", type=int, default=1, help="input channels (default 1)")
    parser.add_argument("--classes", type=int, default=2, help="classes (default 2)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm

    from pncd import models
    from pncd.errors import PncdError
    from pncd.io import versions, write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()] or models.list_models()
    try:
        for n in names:
            models.model_info(n)  # unknown names fail before any timing, listing the valid ones
        if args.size <= 0 or args.size % 16 or args.batch < 2 or args.steps < 1:
            raise PncdError("--size must be a positive multiple of 16, --batch at least 2 (BatchNorm), --steps at least 1")
    except PncdError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1

    rows = []
    for name in tqdm(names, desc="models", unit="model"):
        try:
            rows.append(measure(name, args.size, args.batch, args.steps, args.warmup, args.channels, args.classes))
        except PncdError as e:  # e.g. a network that needs another size multiple
            print(f"{name}: skipped ({e})", file=sys.stderr)
    print(f"training throughput, CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
          f"{args.size}x{args.size}, batch {args.batch}, {args.steps} timed steps after {args.warmup} warm-up")
    print(_table(rows))
    if args.json_path:
        write_json(Path(args.json_path), {
            "benchmark": "train_throughput", "device": "cpu", "threads": torch.get_num_threads(),
            "size": args.size, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
            "channels": args.channels, "classes": args.classes, "results": rows, "versions": versions(),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
