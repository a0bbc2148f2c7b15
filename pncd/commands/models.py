"""``pncd models``: list the registered networks, their size and their distillation taps."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import click

from pncd.commands._options import options
from pncd.optspec import cli


def describe(name: str, in_channels: int = 1, num_classes: int = 2) -> dict:
    """One network's row: role, parameters (built at ``in_channels`` / ``num_classes``), taps."""
    from pncd import models  # torch: imported when a network is built, not for --help

    info = models.model_info(name)
    model = models.create(name, in_channels=in_channels, num_classes=num_classes)
    return {
        "name": name,
        "role": info.get("role"),
        "parameters": models.count_parameters(model),
        "paper_params_m": info.get("paper_params_m"),
        "taps": {key: tap.to_dict() for key, tap in getattr(model, "taps").items()},
    }


def _table(rows: list[dict]) -> str:
    def tap(t: dict) -> str:
        return f"{t['module']} ({t['channels']} ch, /{t['stride']})"

    header = ["name", "role", "params (M)", "paper (M)", "low tap", "high tap"]
    body = [
        [
            r["name"],
            r["role"],
            f"{r['parameters'] / 1e6:.3f}",
            "-" if r["paper_params_m"] is None else f"{r['paper_params_m']:g}",
            tap(r["taps"]["low"]) if "low" in r["taps"] else "-",
            tap(r["taps"]["high"]) if "high" in r["taps"] else "-",
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass
class ModelsOptions:
    """What ``pncd models`` lists and how."""

    role: str | None = field(default=None, metadata=cli("Only students or only teachers.",
                                                        choices=("student", "teacher")))
    channels: int = field(default=1, metadata=cli("Input channels the counts are taken at."))
    classes: int = field(default=2, metadata=cli("Classes the counts are taken at."))
    as_json: bool = field(default=False, metadata=cli("Print machine-readable JSON instead of a table.", flag="--json"))


@click.command("models")
@options(ModelsOptions)
def models_command(role: str | None, channels: int, classes: int, as_json: bool) -> None:
    """List the registered networks: role, parameter count (in millions, at 1 input channel
    and 2 classes unless told otherwise), the reference count they are tested against, and
    the low / high distillation taps (module path, channels, stride).

    \b
    Examples:
      pncd models
      pncd models --role student
      pncd models --json > models.json
    """
    from pncd import models

    rows = [describe(n, channels, classes) for n in models.list_models(role)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(_table(rows))
