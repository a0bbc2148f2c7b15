"""``pncd ablate``: the paper's Table 3 grid for one student, collected into one table.

Rows: the student alone (no module), each module alone, every pair, and all four. Every row
is a distillation (:func:`pncd.distill.run.distill`) under ``OUT/runs/<row>`` with the same
recipe and seed, then scored on ``--split``. Finished rows (those with ``eval.json``) are
skipped, so the command resumes. Each row's options come from ``row_options(run, modules)``,
given by the caller (the command line parses ``--distill-args`` as ``pncd distill`` does).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable

from pncd.errors import RunFailed

# torch-free at import, so that `pncd ablate --help` answers at once: the engine loads when a row runs


def grid(kind: str = "table3") -> list[tuple[str, ...]]:
    """Module subsets of the ablation: ``table3`` = none, singles, pairs, all four."""
    from pncd.distill.options import MODULES

    rows: list[tuple[str, ...]] = [()]
    rows += [(m,) for m in MODULES]
    if kind == "table3":
        rows += list(itertools.combinations(MODULES, 2))
    rows.append(MODULES)
    return rows


def row_name(mods: tuple[str, ...]) -> str:
    return "+".join(mods) if mods else "student-alone"


def score_run(run: Path, split: str, loaded: tuple[Any, dict] | None = None, device: str = "cpu") -> dict[str, Any]:
    """Dice/VOE/RVD of ``run``'s best weights on ``split``; ``loaded`` = an already loaded (model, config)."""
    from pncd.checkpoint import load_model
    from pncd.data import DataSpec, load_split
    from pncd.evaluation.run import evaluate_model
    from pncd.models import count_parameters

    model, cfg = loaded or load_model(run)
    ss = load_split(DataSpec.from_dict(cfg["data"]), split)
    summary = evaluate_model(model, ss, device=device, progress=False).summary()
    return {"run": str(run), "split": split, "parameters": count_parameters(model), **summary}


def markdown_table(rows: list[dict[str, Any]], title: str) -> str:
    from pncd.evaluation.run import fmt

    lines = [f"# {title}", "", "| modules | Dice (mean ± std) | VOE | RVD | cases |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {fmt(r['dice'])} ± {fmt(r['dice_std'])} | {fmt(r['voe'])} | {fmt(r['rvd'])} | {r['n_cases']} |")
    return "\n".join(lines) + "\n"


# (run directory, modules) -> the DistillRun of that row
RowOptions = Callable[[Path, tuple[str, ...]], Any]


def run_ablation(student: str, teacher: str, out: str | Path, grid_kind: str, split: str, row_options: RowOptions,
                 log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run (or continue) every row of the grid, score it on ``split`` and write ablation.md /
    ablation.json into ``out``; returns the rows."""
    from pncd.distill.run import distill
    from pncd.io import read_json, write_json, write_text

    root = Path(out)
    results = []
    for mods in grid(grid_kind):
        name = row_name(mods)
        run = root / "runs" / name
        done = run / "eval.json"
        if done.is_file():
            log(f"[skip] {name}: already scored")
            results.append(read_json(done))
            continue
        log(f"[run] {name}")
        try:
            distill(row_options(run, mods))
        except RunFailed as e:
            raise RunFailed(f"distillation of row {name} failed: {e}") from None
        res = {"row": name, "modules": list(mods), **score_run(run, split)}
        write_json(done, res)
        results.append(res)
    write_json(root / "ablation.json", {"student": student, "teacher": teacher, "split": split, "rows": results})
    write_text(root / "ablation.md", markdown_table(results, f"PNCD ablation: {student} ({split} split, per-case)"))
    log(markdown_table(results, f"PNCD ablation: {student}"))
    return results
