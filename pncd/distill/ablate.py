"""``pncd ablate``: the paper's Table 3 grid for one student, collected into one table.

Rows: the student alone (no module), each module alone, every pair, and all four. Every row
is a distillation (:func:`pncd.distill.run.distill`) under ``OUT/runs/<row>`` with the same
recipe and seed, then scored on ``--split``. Finished rows (those with ``eval.json``) are
skipped, so the command resumes. ``--distill-args`` are ``pncd distill`` flags, parsed by that
command into the run's options (the row's teacher, student, modules, epochs and seed win).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import click

from pncd.config import config_option
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
    from pncd.evaluate import evaluate_model
    from pncd.models import count_parameters

    model, cfg = loaded or load_model(run)
    ss = load_split(DataSpec.from_dict(cfg["data"]), split)
    summary = evaluate_model(model, ss, device=device, progress=False).summary()
    return {"run": str(run), "split": split, "parameters": count_parameters(model), **summary}


def markdown_table(rows: list[dict[str, Any]], title: str) -> str:
    from pncd.evaluate import fmt

    lines = [f"# {title}", "", "| modules | Dice (mean ± std) | VOE | RVD | cases |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {fmt(r['dice'])} ± {fmt(r['dice_std'])} | {fmt(r['voe'])} | {fmt(r['rvd'])} | {r['n_cases']} |")
    return "\n".join(lines) + "\n"


@click.command("ablate")
@config_option
@click.option("--teacher", required=True, help="Teacher run directory.")
@click.option("--student", default="enet", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory for the runs and the table.")
@click.option("--grid", "grid_kind", type=click.Choice(["table3", "singles"]), default="table3", show_default=True,
              help="table3: none, each module, each pair, all four; singles: none, each module, all four.")
@click.option("--split", default="test", show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--distill-args", default="", help="Extra options passed to every `pncd distill` (quoted string).")
def ablate_command(config: str | None, teacher: str, student: str, out: str, grid_kind: str, split: str, epochs: int, seed: int, distill_args: str) -> None:
    """Run the PNCD module ablation for one student and write ablation.md / ablation.json.

    \b
    Example:
      pncd ablate --teacher runs/dcsaunet --student enet --epochs 10 --out runs/ablate-enet \\
          --distill-args "--size 128 --batch 8 --lesion-fraction 0.5"
    """
    from pncd.io import read_json, write_json, write_text

    root = Path(out)
    results = []
    for mods in grid(grid_kind):
        name = row_name(mods)
        run = root / "runs" / name
        done = run / "eval.json"
        if done.is_file():
            click.echo(f"[skip] {name}: already scored")
            results.append(read_json(done))
            continue
        click.echo(f"[run] {name}")
        row_run(teacher, student, run, mods, epochs, seed, distill_args)
        res = {"row": name, "modules": list(mods), **score_run(run, split)}
        write_json(done, res)
        results.append(res)
    write_json(root / "ablation.json", {"student": student, "teacher": teacher, "split": split, "rows": results})
    write_text(root / "ablation.md", markdown_table(results, f"PNCD ablation: {student} ({split} split, per-case)"))
    click.echo(markdown_table(results, f"PNCD ablation: {student}"))


def row_options(teacher: str, student: str, run: Path, mods: tuple[str, ...], epochs: int, seed: int, distill_args: str) -> Any:
    """The :class:`~pncd.distill.options.DistillRun` of one row: ``distill_args`` parsed as
    ``pncd distill`` parses them, then the row's own settings (continued with --resume when
    the row has a finished epoch, replaced with --force when it has only a partial one)."""
    import shlex

    from pncd.commands.distill import distill_command, distill_run

    args = [*shlex.split(distill_args), "--teacher", teacher, "--student", student, "--out", str(run), "--epochs", str(epochs),
            "--seed", str(seed), "--modules", ",".join(mods) or "none"]
    if run.exists():
        args.append("--resume" if (run / "last_state.pt").is_file() else "--force")
    with distill_command.make_context("distill", args) as ctx:
        return distill_run(ctx, ctx.params)


def row_run(teacher: str, student: str, run: Path, mods: tuple[str, ...], epochs: int, seed: int, distill_args: str) -> None:
    from pncd.distill.run import distill

    try:
        distill(row_options(teacher, student, run, mods, epochs, seed, distill_args))
    except RunFailed as e:
        raise RunFailed(f"distillation of row {row_name(mods)} failed: {e}") from None
