"""``pncd ablate``: the paper's Table 3 grid for one student, collected into one table.

Rows: the student alone (no module), each module alone, every pair, and all four. Every row
is a distillation (:func:`pncd.distill.run.distill`) under ``OUT/runs/<row>`` with the same
recipe and seed, then scored on ``--split``. A row scored with the same settings (its
``eval.json`` records the row's key: :func:`row_key`, the teacher's SHA-256 and every option
that changes its numbers) is skipped, so the command resumes; a row of other settings is run
again. Each row's options come from ``row_options(run, modules)``, given by the caller (the
command line parses ``--distill-args`` as ``pncd distill`` does).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pncd.errors import RunFailed
from pncd.optspec import cli

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


@dataclass(kw_only=True)
class AblateOptions:
    """``pncd ablate``'s options: the grid, its shared recipe and where it goes."""

    teacher: str = field(metadata=cli("Teacher run directory."))
    student: str = field(default="enet", metadata=cli())
    out: str = field(metadata=cli(
        "Directory for the runs and the table (new, or one pncd ablate wrote: it continues there).", path="dir"))
    grid_kind: str = field(default="table3", metadata=cli(
        "table3: none, each module, each pair, all four; singles: none, each module, all four.", flag="--grid",
        choices=("table3", "singles")))
    split: str = field(default="test", metadata=cli())
    epochs: int = field(default=20, metadata=cli(low=1))
    seed: int = field(default=0, metadata=cli(low=0))
    distill_args: str = field(default="", metadata=cli(
        "Extra options passed to every `pncd distill` (quoted string)."))


# (run directory, modules) -> the DistillRun of that row (neither resume nor force: run_ablation sets them)
RowOptions = Callable[[Path, tuple[str, ...]], Any]
ABLATION_FILES = ("ablation.json", "ablation.md", "runs", "row-keys.json")  # what OUT holds (its marker lists them)
ROW_KEYS = "row-keys.json"  # the key of each row's distillation when it was started (to resume only the same one)
_NOT_IN_KEY = frozenset({"out", "resume", "force", "teacher", "teacher_weights"})  # the teacher counts by its SHA-256


def teacher_sha256(opts: Any) -> str | None:
    """The SHA-256 of the weights the row's teacher loads: the run's best checkpoint (else its
    last), or ``--teacher-weights`` of a factory teacher; None when there are none to hash."""
    from pncd.io import sha256_file

    if Path(opts.teacher).exists():
        from pncd.checkpoint import checkpoint_path

        return sha256_file(checkpoint_path(opts.teacher, "best"))
    return sha256_file(opts.teacher_weights) if opts.teacher_weights and Path(opts.teacher_weights).is_file() else None


def row_key(opts: Any, split: str, teacher_sha: str | None) -> dict[str, Any]:
    """Everything that changes a row's numbers: the teacher's weights (SHA-256; a factory
    teacher also by name), every distillation option (student, modules and weights, epochs,
    seed, data, the --distill-args) and the split it is scored on. JSON-plain, so that a
    recorded key compares equal to a new one."""
    import json

    params = {k: v for k, v in opts.params().items() if k not in _NOT_IN_KEY}
    factory = None if Path(opts.teacher).exists() else str(opts.teacher)
    key = {"teacher_sha256": teacher_sha, "teacher_factory": factory, "distill": params, "split": split}
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def _same(a: Any, b: Any, but: tuple[str, ...] = ()) -> bool:
    """Two keys equal (leaving out the fields ``but``); a missing key equals nothing."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    return {k: v for k, v in a.items() if k not in but} == {k: v for k, v in b.items() if k not in but}


def adopt_legacy(root: Path) -> None:
    """An ablation folder of a pncd from before ablate marked its --out (no marker; only its
    ablation.json, ablation.md and runs/, and an ablation.json that is one): marked as pncd's."""
    import json

    from pncd.io import OWNED_MARKER, write_owned

    if not root.is_dir() or (root / OWNED_MARKER).exists():
        return
    names = {p.name for p in root.iterdir()}
    try:
        doc = json.loads((root / "ablation.json").read_text())
    except (OSError, ValueError):
        return
    if names <= {"ablation.json", "ablation.md", "runs"} and isinstance(doc, dict) and \
            isinstance(doc.get("rows"), list) and "student" in doc:
        write_owned(root, names, "ablation")


def run_ablation(student: str, teacher: str, out: str | Path, grid_kind: str, split: str, row_options: RowOptions,
                 log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run (or continue) every row of the grid, score it on ``split`` and write ablation.md /
    ablation.json into ``out``; returns the rows. ``out`` is refused as --force would refuse it
    (a folder pncd did not write, another kind of output, the teacher: :func:`pncd.io.claim_dir`).
    A row is reused only when its key (:func:`row_key`) is the one recorded with its scores;
    one whose distillation settings changed is distilled again (its run replaced), one whose
    split alone changed is scored again."""
    from pncd.io import claim_dir, read_json, write_json, write_text

    adopt_legacy(Path(out))
    root = claim_dir(out, "ablation", ABLATION_FILES, protect=(teacher if Path(teacher).exists() else None,))
    started = read_json(root / ROW_KEYS).get("rows", {}) if (root / ROW_KEYS).is_file() else {}
    results, teacher_sha = [], None
    for mods in grid(grid_kind):
        name = row_name(mods)
        run = root / "runs" / name
        opts = row_options(run, mods)
        teacher_sha = teacher_sha or teacher_sha256(opts)
        key = row_key(opts, split, teacher_sha)
        old = read_json(run / "eval.json") if (run / "eval.json").is_file() else {}
        if _same(old.get("key"), key):
            log(f"[skip] {name}: already scored with these settings")
            results.append(old)
            continue
        if not _same(old.get("key"), key, but=("split",)):
            _distill_row(name, run, opts, key, started, root, log)
        else:
            log(f"[score] {name}: scored again on the {split} split")
        res = {"row": name, "modules": list(mods), **score_run(run, split), "key": key}
        write_json(run / "eval.json", res)
        results.append(res)
    write_json(root / "ablation.json", {"student": student, "teacher": teacher, "teacher_sha256": teacher_sha,
                                        "split": split, "rows": results})
    write_text(root / "ablation.md", markdown_table(results, f"PNCD ablation: {student} ({split} split, per-case)"))
    log(markdown_table(results, f"PNCD ablation: {student}"))
    return results


def _distill_row(name: str, run: Path, opts: Any, key: dict[str, Any], started: dict[str, Any], root: Path,
                 log: Callable[[str], None]) -> None:
    """Distil one row: continue its run when it was started with the same key and has a
    finished epoch, else replace it (as pncd distill --force would; nothing of it is kept)."""
    import dataclasses

    from pncd.distill.run import distill
    from pncd.io import write_json

    same = _same(started.get(name), key, but=("split",))
    resume = same and (run / "last_state.pt").is_file()
    replace = run.exists() and not resume
    if replace:
        (run / "eval.json").unlink(missing_ok=True)  # scores of other settings: never shown as this row's
    why = ("" if not replace else " (its unfinished run is replaced)" if same
           else " (settings changed since it ran: its run is replaced)")
    log(f"[run] {name}" + (" (continued)" if resume else why))
    started[name] = key
    write_json(root / ROW_KEYS, {"rows": started})
    try:
        distill(dataclasses.replace(opts, resume=resume, force=replace))
    except RunFailed as e:
        raise RunFailed(f"distillation of row {name} failed: {e}") from None
