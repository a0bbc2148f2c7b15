"""What ``pncd gate`` can be asked besides the baseline rules' thresholds
(:class:`pncd.bench.gate_rules.Limits`): :class:`GateOptions`, each option's default, help text
and range written once (``metadata=cli(...)``, :mod:`pncd.optspec`); the click options of
:mod:`pncd.commands.gate` are generated from both, and :func:`pncd.bench.gate.run_gate` takes
its defaults from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pncd.optspec import cli


@dataclass(kw_only=True)
class GateOptions:
    baseline: Path | None = field(default=None, metadata=cli(
        "Committed baseline JSON (pncd.baseline/1). Without it only the reference rule is checked.", path="file"))
    min_ref_ratio: float = field(default=0.99, metadata=cli(
        "Artifact Dice / its torch reference Dice must be at least this.", low=0.0, high=1.5, low_open=True))
    min_dice: float | None = field(default=None, metadata=cli(
        "Absolute floor: every entry (artifacts and torch references) with a Dice below this fails, named in its row; "
        "a model that segments nothing passes every relative rule. Default: no floor. Example: --min-dice 0.5",
        low=0.0, high=1.0))
    allow_missing: bool = field(default=False, metadata=cli(
        "Skip baseline entries missing from the report (by default each one fails)."))
    require_all: bool = field(default=False, metadata=cli(
        "Also fail on report entries missing from the baseline (by default they are skipped)."))
    allow_unverified: bool = field(default=False, metadata=cli(
        "Accept a report benched with --no-verify (by default it fails, with a warning)."))
    allow_stale_source: bool = field(default=False, metadata=cli(
        "Accept entries benched with --allow-stale-source (by default each one fails, with a warning)."))
    allow_empty: bool = field(default=False, metadata=cli(
        "Pass even when no row could be compared (every row skipped)."))
    update_baseline: bool = field(default=False, metadata=cli(
        "Write --baseline from REPORT instead of checking; replaces only a pncd baseline file."))
