"""How high can a teacher get on LGG's test split from what was trained here? Ensembles of runs.

The target is a teacher at >= 0.75 per-patient test Dice. This scores every finished run of
lgg_distill.py (and the teacher), alone and as ensembles that average their foreground
probabilities (argmax of the mean, i.e. mean probability > 0.5), with the per-patient Dice of
``pncd eval`` (each patient's slices pooled; checked: the single runs reproduce their scored
rows). An ensemble that does not reach 0.75 says that a larger teacher of the same kind, trained
the same way, is unlikely to either.

    python bench/experiments/lgg_ensemble.py --data path/to/lgg-flair \\
        --teacher bench/results/lgg-distill/teacher --work runs/lgg-distill \\
        --json bench/results/lgg-distill/ensembles.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def foreground(run: Path, images: np.ndarray, batch: int = 32) -> np.ndarray:
    import torch

    from pncd.checkpoint import load_model

    model, _ = load_model(run)
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(torch.softmax(model(torch.from_numpy(images[i : i + batch])), 1)[:, 1].numpy())
    return np.concatenate(out)


def per_patient_dice(prob: np.ndarray, labels: np.ndarray, cases: list[str]) -> float:
    """pncd eval's per-patient Dice of the prediction ``prob > 0.5``."""
    from pncd.scoring import score

    return float(score((prob > 0.5).astype(np.int64), labels, cases, num_classes=2).summary()["dice"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher", required=True, type=Path)
    ap.add_argument("--work", type=Path, default=Path("runs/lgg-distill"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    import torch

    from pncd.checkpoint import read_run_config
    from pncd.data.loading import load_split
    from pncd.data.spec import DataSpec
    from pncd.io import write_json

    torch.set_num_threads(a.threads)
    runs = {"teacher": a.teacher}
    for run in sorted((a.work / "runs").glob("*-s[0-9]*")):
        if (run / "best.safetensors").is_file() and (a.work / "rows" / f"{run.name}.json").is_file():
            runs[run.name] = run  # finished and scored by lgg_distill.py
    data = {**read_run_config(a.teacher)["data"], "root": str(Path(a.data).resolve())}
    probs: dict[str, dict[str, np.ndarray]] = {}
    truth = {}
    for split in ("val", "test"):
        ds = load_split(DataSpec(**data), split)
        truth[split] = (np.asarray(ds.masks), list(ds.case_ids))
        probs[split] = {name: foreground(run, ds.images) for name, run in runs.items()}

    def score(names: list[str]) -> dict[str, float]:
        return {split: per_patient_dice(np.mean([probs[split][n] for n in names], 0), *truth[split]) for split in ("val", "test")}

    alone = [n for n in runs if "-alone-" in n]
    groups = {
        "every run alone": alone,
        "every run alone + teacher": ["teacher", *alone],
        "every run (alone, distilled) + teacher": list(runs),
        **{f"{st} alone, every seed": [n for n in alone if n.startswith(f"{st}-")] for st in ("enet", "mobilenetv2", "resnet18")},
        "teacher + resnet18 alone": ["teacher", *(n for n in alone if n.startswith("resnet18-"))],
    }
    singles = {n: score([n]) for n in runs}
    ensembles = {g: {"members": ns, **score(ns)} for g, ns in groups.items() if ns}
    for n, s in singles.items():
        print(f"{n:28s} val {s['val']:.4f}  test {s['test']:.4f}")
    for g, s in ensembles.items():
        print(f"ensemble: {g:40s} ({len(s['members']):2d}) val {s['val']:.4f}  test {s['test']:.4f}")
    if a.json:
        write_json(a.json, {"singles": singles, "ensembles": ensembles, "rule": "mean foreground probability > 0.5",
                            "metric": "per-patient Dice, slices of a patient pooled"})


if __name__ == "__main__":
    main()
